"""Both roles' journals behind the one send path (contracts/sending.py), on a real Anvil: the trainer's journal
(node/journal.py) and the validator's store (validator/tx_journal.py over store.pending_txs). A sender killed
right after journalling a transaction sends it again on restart only while its effect is not on chain; one
killed after its transaction was mined, before the journal heard of it, never sends a second one.

The effect is a value transfer to a fresh address (every transfer mined adds to its balance, so a double send
shows); a kill is an exception raised from the journal method at that step, after it wrote."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3
from web3.types import TxParams, Wei

from contracts.anvil import AnvilNode
from contracts.sending import Once, TxJournal, TxState, receipt_hash, send_transaction, tx_state
from contracts.tx import NONCES
from node.journal import TX_COMMIT, TrainerJournal
from validator.store import TX_PUBLISH, ValidatorStore
from validator.tx_journal import StoreTxJournal

AMOUNT = 1_000


class Killed(Exception):
    pass


@dataclass
class Role:
    journal: TxJournal
    kind: str
    key: str
    confirmed: Callable[[], bool]  # what the role's own records say once the send is through
    close: Callable[[], None]


def trainer(tmp: Path, sender: str) -> Role:
    journal = TrainerJournal(tmp, run_id=0, trainer=sender)
    journal.prepare(3, "base", "cid", b"\0" * 32, b"\1" * 32, b"payload", 1.0)

    def committed() -> bool:
        entry = journal.get(3)
        return entry is not None and entry.committed

    return Role(journal, TX_COMMIT, "3", committed, journal.close)


def validator(kind: str) -> Callable[[Path, str], Role]:
    def make(tmp: Path, sender: str) -> Role:
        store = ValidatorStore(tmp / "state.sqlite3")

        def confirmed() -> bool:
            pending = store.pending_tx(kind, "5")
            return pending is not None and pending.status == "confirmed"

        return Role(StoreTxJournal(store), kind, "5", confirmed, store.close)
    return make


# The validator's publish is confirmed with the window's record (store.mark_published), not by the sender.
ROLES = {"trainer": (trainer, True), "validator commit_weights": (validator("commit_weights"), True),
         "validator publish": (validator(TX_PUBLISH), False)}


@pytest.fixture(scope="module")
def chain() -> Iterator[AnvilNode]:
    with AnvilNode() as node:
        yield node


def transfer_to(web3: Web3, to: str, account: Any, role: Role, done: Callable[[], bool] | None = None) -> Any:
    params: TxParams = {"to": to, "value": Wei(AMOUNT)}
    check = done or (lambda: web3.eth.get_balance(to) > 0)  # type: ignore[arg-type]
    return send_transaction(web3, account, params, "transfer", once=Once(role.journal, role.kind, role.key, check))


def die_after(role: Role, method: str) -> None:
    original = getattr(role.journal, method)

    def dying(*args: Any) -> None:
        original(*args)
        raise Killed(method)

    setattr(role.journal, method, dying)


@dataclass
class Restarted:
    """A role killed right after `method` of its journal during a transfer, then started again."""

    web3: Web3
    account: Any
    to: str
    role: Role
    sent: int  # the account's transaction count before the killed transfer


def kill_and_restart(chain: AnvilNode, tmp_path: Path, name: str, key_index: int, method: str) -> Restarted:
    make, _ = ROLES[name]
    web3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    account = Account.from_key(chain.private_keys[key_index])
    to = Account.create().address
    role = make(tmp_path, account.address)
    die_after(role, method)
    sent = web3.eth.get_transaction_count(account.address)
    with pytest.raises(Killed):
        transfer_to(web3, to, account, role)
    role.close()
    NONCES.reset()  # a restarted process
    return Restarted(web3, account, to, make(tmp_path, account.address), sent)


@pytest.mark.parametrize("name", ROLES)
def test_killed_after_journalling_resends_only_while_not_done(chain: AnvilNode, tmp_path: Path, name: str) -> None:
    _, confirms = ROLES[name]
    r = kill_and_restart(chain, tmp_path, name, 7, "record_sent")
    web3, account, to, role, sent = r.web3, r.account, r.to, r.role, r.sent
    recorded = role.journal.recorded(role.kind, role.key)
    assert recorded is not None and tx_state(web3, recorded.tx_hash) is TxState.UNKNOWN  # journalled, never sent
    receipt = transfer_to(web3, to, account, role)
    assert receipt is not None and web3.eth.get_balance(to) == AMOUNT
    again = role.journal.recorded(role.kind, role.key)
    # Signed again on the same nonce, so the same bytes here (RFC 6979 signatures are deterministic): one tx.
    assert again is not None and again.tx_hash == receipt_hash(receipt)
    assert web3.eth.get_transaction_count(account.address) == sent + 1
    assert role.confirmed() is confirms
    role.close()


@pytest.mark.parametrize("name", ROLES)
def test_killed_after_mining_never_sends_twice(chain: AnvilNode, tmp_path: Path, name: str) -> None:
    _, confirms = ROLES[name]
    r = kill_and_restart(chain, tmp_path, name, 8, "record_confirmed")
    web3, account, to, role, sent = r.web3, r.account, r.to, r.role, r.sent
    # done() says no: only the journal's hash stands between the restart and a second transfer.
    receipt = transfer_to(web3, to, account, role, done=lambda: False)
    assert receipt is not None and web3.eth.get_balance(to) == AMOUNT
    assert web3.eth.get_transaction_count(account.address) == sent + 1
    assert role.confirmed() is confirms
    role.close()
