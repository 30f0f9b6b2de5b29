"""The one send path's journal hook (contracts/sending.py) on a real Anvil: a sender killed between any two
steps (sign, record, broadcast, confirm) never sends twice, a recorded transaction still in the mempool is
waited for, and a nonce taken by another transaction of the same key is signed again on a fresh nonce.

The effect sent is a plain value transfer to a fresh address: not idempotent (every transfer mined adds to the
balance), so a second send would show as twice the amount. A kill is an exception raised from the journal hook
at that step, after (or before) the journal wrote; the "restart" is a second call with the same journal."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.types import TxParams, TxReceipt, Wei

from base.errors import is_temporary
from contracts import sending
from contracts.errors import SendConflict, TransactionFailed, TransactionPending
from contracts.sending import Once, RecordedTx, TxState, receipt_hash, send_transaction, tx_state
from contracts.tx import NONCES, ResendPolicy, sign_transaction

from .conftest import Chain

AMOUNT = 1_000
KIND, KEY = "transfer", "0"


class Killed(Exception):
    """The process died at this step."""


@dataclass
class MemoryJournal:
    """A TxJournal in a dict, which can die at a step: `die_at` = (method, after it wrote)."""

    rows: dict[tuple[str, str], tuple[str, int, bool]] = field(default_factory=dict)
    die_at: tuple[str, bool] | None = None
    calls: list[str] = field(default_factory=list)
    on_sent: list[Callable[[], None]] = field(default_factory=list)  # run after record_sent wrote (a rival)

    def _maybe_die(self, method: str, after: bool) -> None:
        if self.die_at == (method, after):
            self.die_at = None
            raise Killed(method)

    def recorded(self, kind: str, key: str) -> RecordedTx | None:
        row = self.rows.get((kind, key))
        return None if row is None else RecordedTx(row[0], row[2])

    def record_sent(self, kind: str, key: str, tx_hash: str, nonce: int) -> None:
        self.calls.append("sent")
        self._maybe_die("record_sent", False)
        self.rows[(kind, key)] = (tx_hash, nonce, False)
        self._maybe_die("record_sent", True)
        for hook in self.on_sent:
            hook()
        self.on_sent.clear()

    def record_confirmed(self, kind: str, key: str, tx_hash: str) -> None:
        self.calls.append("confirmed")
        self._maybe_die("record_confirmed", False)
        tx_hash_sent, nonce, _ = self.rows[(kind, key)]
        assert tx_hash_sent == tx_hash
        self.rows[(kind, key)] = (tx_hash, nonce, True)


@dataclass
class Transfer:
    chain: Chain
    to: str = field(default_factory=lambda: Account.create().address)

    @property
    def account(self) -> LocalAccount:
        return self.chain.trainers[5].account

    @property
    def params(self) -> TxParams:
        return {"to": self.to, "value": Wei(AMOUNT)}

    def applied(self) -> int:
        """How many transfers reached the address (more than one is a double send)."""
        return self.chain.web3.eth.get_balance(self.to) // AMOUNT  # type: ignore[arg-type]

    def once(self, journal: MemoryJournal) -> Once:
        return Once(journal, KIND, KEY, lambda: self.applied() > 0)

    def send(self, journal: MemoryJournal, policy: ResendPolicy | None = None) -> TxReceipt | None:
        return send_transaction(self.chain.web3, self.account, self.params, "transfer", policy=policy,
                                once=self.once(journal))

    def sent_count(self) -> int:
        return self.chain.web3.eth.get_transaction_count(self.account.address, "pending")


@contextmanager
def no_automine(chain: Chain) -> Iterator[None]:
    chain.node.set_automine(False)
    try:
        yield
    finally:
        chain.node.set_automine(True)
        chain.node.mine(1)


def test_killed_before_recording_sends_on_restart(chain: Chain) -> None:
    transfer, journal = Transfer(chain), MemoryJournal(die_at=("record_sent", False))
    before = transfer.sent_count()
    with pytest.raises(Killed):
        transfer.send(journal)
    assert journal.recorded(KIND, KEY) is None
    NONCES.reset()  # the dead process's nonce cache is gone
    receipt = transfer.send(journal)
    assert receipt is not None and transfer.applied() == 1
    assert transfer.sent_count() == before + 1


def test_recorded_but_never_broadcast_is_resent_only_when_not_done(chain: Chain) -> None:
    transfer, journal = Transfer(chain), MemoryJournal(die_at=("record_sent", True))
    before = transfer.sent_count()
    with pytest.raises(Killed):
        transfer.send(journal)
    first = journal.recorded(KIND, KEY)
    assert first is not None and tx_state(chain.web3, first.tx_hash) is TxState.UNKNOWN  # signed, never sent
    NONCES.reset()
    receipt = transfer.send(journal)  # not done: sent now, under a hash the journal records first
    assert receipt is not None and transfer.applied() == 1 and transfer.sent_count() == before + 1
    second = journal.recorded(KIND, KEY)
    assert second is not None and second.confirmed
    assert tx_state(chain.web3, second.tx_hash) is TxState.SUCCEEDED

    # The same kill when the effect is already on chain (another path applied it): nothing is sent.
    journal = MemoryJournal(die_at=("record_sent", True))
    other = Transfer(chain)
    with pytest.raises(Killed):
        send_transaction(chain.web3, other.account, other.params, "transfer", once=other.once(journal))
    NONCES.reset()
    send_transaction(chain.web3, chain.sponsor.account, other.params, "transfer")  # the effect, sent by another
    sent = other.sent_count()
    assert other.send(journal) is None
    assert other.applied() == 1 and other.sent_count() == sent


def test_recorded_and_mined_is_not_resent(chain: Chain) -> None:
    """Killed after the broadcast, before the journal heard it was mined: the restart finds the recorded hash mined
    and returns its receipt, even with `done()` saying no (the journal, not done(), prevents the second send)."""
    transfer, journal = Transfer(chain), MemoryJournal(die_at=("record_confirmed", False))
    before = transfer.sent_count()
    with pytest.raises(Killed):
        transfer.send(journal)
    assert transfer.applied() == 1 and transfer.sent_count() == before + 1
    recorded = journal.recorded(KIND, KEY)
    assert recorded is not None and not recorded.confirmed
    NONCES.reset()
    blind = Once(journal, KIND, KEY, lambda: False)
    receipt = send_transaction(chain.web3, transfer.account, transfer.params, "transfer", once=blind)
    assert receipt is not None and receipt_hash(receipt) == recorded.tx_hash
    assert transfer.applied() == 1 and transfer.sent_count() == before + 1
    assert journal.calls == ["sent", "confirmed", "confirmed"]
    again = journal.recorded(KIND, KEY)
    assert again is not None and again.confirmed
    assert send_transaction(chain.web3, transfer.account, transfer.params, "transfer", once=blind) is not None
    assert transfer.applied() == 1 and transfer.sent_count() == before + 1  # confirmed: never looked at twice


def test_a_recorded_tx_in_the_mempool_is_waited_for_not_doubled(chain: Chain) -> None:
    transfer, journal = Transfer(chain), MemoryJournal()
    before = transfer.sent_count()
    short = ResendPolicy(receipt_timeout_s=0.5)
    with no_automine(chain):
        with pytest.raises(TransactionPending) as pending:
            transfer.send(journal, short)
        assert not isinstance(pending.value, TransactionFailed) and is_temporary(pending.value)
        recorded = journal.recorded(KIND, KEY)
        assert recorded is not None and tx_state(chain.web3, recorded.tx_hash) is TxState.PENDING
        NONCES.reset()
        with pytest.raises(TransactionPending):  # still pending: waited for again, nothing new sent
            transfer.send(journal, short)
        assert transfer.sent_count() == before + 1
        timer = threading.Timer(0.5, chain.node.mine, args=(1,))
        timer.start()
        try:
            receipt = transfer.send(journal)  # mined while it waits
        finally:
            timer.join()
    assert receipt is not None and receipt_hash(receipt) == recorded.tx_hash
    assert transfer.applied() == 1 and transfer.sent_count() == before + 1


def test_a_nonce_taken_by_another_tx_is_signed_again_only_with_a_journal(chain: Chain) -> None:
    """Between our signing and our broadcast, another process sends from the same key on the same nonce (the
    user's wallet) and it is mined: journalled, ours is signed again on the next nonce; without a journal that is
    a TransactionFailed (a retry could not tell its own transaction from a new one)."""
    transfer, journal = Transfer(chain), MemoryJournal()
    web3, account = chain.web3, transfer.account
    rival_to = Account.create().address

    def rival() -> None:
        nonce = web3.eth.get_transaction_count(account.address, "pending")
        raw = account.sign_transaction({"to": rival_to, "value": 1, "gas": 21_000, "nonce": nonce,
                                        "gasPrice": web3.eth.gas_price, "chainId": web3.eth.chain_id}).raw_transaction
        send_transaction(web3, account, {"to": rival_to, "value": Wei(1)}, "rival", sign=lambda _: bytes(raw))

    journal.on_sent.append(rival)
    receipt = transfer.send(journal)
    assert receipt is not None and receipt["status"] == 1
    assert journal.calls == ["sent", "sent", "confirmed"]  # re-signed and re-recorded once
    assert transfer.applied() == 1 and web3.eth.get_balance(rival_to) == 1

    NONCES.reset()
    plain = Transfer(chain)

    def sign_then_rival(params: TxParams) -> bytes:
        raw = sign_transaction(web3, account, params, "transfer")
        NONCES.reset()
        rival()
        return raw

    with pytest.raises(TransactionFailed, match="was used by another transaction"):
        send_transaction(web3, account, plain.params, "transfer", sign=sign_then_rival)
    assert plain.applied() == 0


def test_a_nonce_lost_at_every_attempt_is_a_temporary_send_conflict(chain: Chain, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    monkeypatch.setattr(sending, "CONFLICT_BACKOFF_S", 0.0)
    transfer, journal = Transfer(chain), MemoryJournal()
    web3, account = chain.web3, transfer.account

    def sign_then_rival(params: TxParams) -> bytes:
        raw = sign_transaction(web3, account, params, "transfer")
        NONCES.reset()
        rival_raw = account.sign_transaction({
            "to": Account.create().address, "value": 1, "gas": 21_000, "nonce": web3.eth.get_transaction_count(
                account.address, "pending"), "gasPrice": web3.eth.gas_price, "chainId": web3.eth.chain_id,
        }).raw_transaction
        send_transaction(web3, account, {"to": account.address}, "rival", sign=lambda _: bytes(rival_raw))
        return raw

    with pytest.raises(SendConflict) as conflict:
        send_transaction(web3, account, transfer.params, "transfer", once=transfer.once(journal),
                         sign=sign_then_rival)
    assert is_temporary(conflict.value) and transfer.applied() == 0
    assert journal.calls == ["sent"] * sending.NONCE_ATTEMPTS
