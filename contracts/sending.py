"""The one way this project sends a transaction, and the one "is it mined yet?" check.

`send_transaction` signs (contracts/tx.py), broadcasts, and awaits the receipt. Idempotent by nonce: a
transaction is signed once; after a lost response, a dropped connection or a chain restarted from a saved state,
the *same signed bytes* are sent again and the receipt is looked up by hash, so at most one transaction of that
nonce can ever be mined (a resend of a mined one is refused as "nonce too low" or "already known").

With `once` (a `Once`: a journal, the effect's (kind, key), and `done()`, which reads the chain), the send is
also safe across crashes and against other senders of the same key:
  1. a transaction the journal recorded for (kind, key) is looked up by hash: mined and succeeded, it is the
     answer; still in the mempool, it is waited for (TransactionPending, temporary, if the wait runs out);
     reverted, or unknown to the chain (killed before the broadcast), it is sent again only if `done()` is false;
  2. if `done()` (the effect is on chain already), nothing is sent;
  3. otherwise the transaction is signed, its hash and nonce are journalled (`record_sent`) *before* the
     broadcast, and once mined the journal hears of it (`record_confirmed`);
  4. when another transaction of the same account took the nonce (the user's wallet or `node claim` sending
     from the key meanwhile), it is signed again on a fresh nonce, after checking `done()` once more; SendConflict
     (temporary) after NONCE_ATTEMPTS such attempts.
So a SIGKILL between any two steps leaves a state a restart resolves without a blind second send. Without
`once`, a nonce taken by another transaction, or a receipt that does not come, is a TransactionFailed: with
nothing journalled, a retry could not tell its own transaction from a new one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, overload

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    Web3Exception,
)
from web3.types import TxParams, TxReceipt

from contracts import tx as _tx
from contracts.errors import (
    ChainUnreachable,
    ContractReverted,
    RevertedOnChain,
    SendConflict,
    TransactionFailed,
    TransactionPending,
)
from contracts.receipts import (
    CONNECTION_ERRORS,
    NonceTaken,
    StillPending,
    TxState,
    receipt_hash,
    receipt_of,
    settle,
    transaction_of,
    tx_state,
)
from contracts.tx import NONCES, ErrorDecoder, ResendPolicy, as_reverted, endpoint_of, nonce_of, tx_hash_of

# Re-exported: the mined check and the receipt's hash belong to the send path's interface.
__all__ = ["Once", "RecordedTx", "TxJournal", "TxState", "receipt_hash", "send_transaction", "tx_state"]

NONCE_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.2


@dataclass(frozen=True)
class RecordedTx:
    """What a journal holds for one effect: the hash last sent for it, and whether it knows that one mined."""

    tx_hash: str
    confirmed: bool


class TxJournal(Protocol):
    """Where a role keeps its transactions across crashes (node/journal.py, validator/tx_journal.py)."""

    def recorded(self, kind: str, key: str) -> RecordedTx | None:
        """The transaction last recorded for (kind, key), if any."""

    def record_sent(self, kind: str, key: str, tx_hash: str, nonce: int) -> None:
        """Durably, before the broadcast: `tx_hash` (nonce `nonce`) is about to be sent for (kind, key)."""

    def record_confirmed(self, kind: str, key: str, tx_hash: str) -> None:
        """`tx_hash`, recorded for (kind, key), was mined and succeeded."""


@dataclass(frozen=True)
class Once:
    """Send at most once across crashes: the effect (kind, key) in `journal`, `done()` reading it on chain."""

    journal: TxJournal
    kind: str
    key: str
    done: Callable[[], bool]


Signer = Callable[[TxParams], bytes]


@overload
def send_transaction(web3: Web3, account: LocalAccount, tx: TxParams, function: str,
                     decoder: ErrorDecoder | None = None, policy: ResendPolicy | None = None, once: None = None,
                     sign: Signer | None = None) -> TxReceipt: ...


@overload
def send_transaction(web3: Web3, account: LocalAccount, tx: TxParams, function: str,
                     decoder: ErrorDecoder | None = None, policy: ResendPolicy | None = None, *, once: Once,
                     sign: Signer | None = None) -> TxReceipt | None: ...


def send_transaction(web3: Web3, account: LocalAccount, tx: TxParams, function: str,
                     decoder: ErrorDecoder | None = None, policy: ResendPolicy | None = None,
                     once: Once | None = None, sign: Signer | None = None) -> TxReceipt | None:
    """Sign, send and await one transaction (see the module docstring); the receipt of the transaction that
    applied the effect, or None when `once.done()` found it applied without one of ours. `sign` replaces how
    the parameters are signed (the typed client's hook). Raises ContractReverted / RevertedOnChain /
    TransactionFailed / ChainUnreachable, and with `once` TransactionPending / SendConflict."""
    policy = policy or _tx.RESEND_POLICY
    me = account.address
    if once is not None:
        recorded = once.journal.recorded(once.kind, once.key)
        if recorded is not None:
            receipt = _resume(web3, me, function, recorded, policy)
            if receipt is not None:
                if not recorded.confirmed:
                    once.journal.record_confirmed(once.kind, once.key, recorded.tx_hash)
                return receipt
            if recorded.confirmed:
                return None  # mined by the journal's account, but the chain no longer shows it: never send twice
        if once.done():
            return None
    attempts = NONCE_ATTEMPTS if once is not None else 1
    tx_hash = "(not sent)"
    for attempt in range(attempts):
        if attempt:
            time.sleep(CONFLICT_BACKOFF_S * attempt)
            if once is not None and once.done():
                return None  # the effect landed meanwhile (e.g. through the user's other command)
        if once is not None:
            NONCES.forget(web3, me)  # the chain's pending count, not a count kept here: other commands send too
        raw = sign(tx) if sign is not None else _tx.sign_transaction(web3, account, tx, function, decoder, policy)
        tx_hash, nonce = tx_hash_of(raw), nonce_of(raw)
        if once is not None:
            once.journal.record_sent(once.kind, once.key, tx_hash, nonce)
        try:
            receipt = settle(web3, me, function, tx_hash, nonce, policy, raw)
        except NonceTaken:
            NONCES.forget(web3, me)
            if once is None:
                raise TransactionFailed(function, tx_hash, f"nonce {nonce} was used by another transaction") from None
            continue
        except StillPending:
            NONCES.forget(web3, me)
            reason = f"not mined after {policy.receipt_timeout_s:.0f}s"
            if once is None:
                raise TransactionFailed(function, tx_hash, reason) from None
            raise TransactionPending(function, tx_hash, reason) from None
        except (ContractCustomError, ContractPanicError, ContractLogicError) as err:
            NONCES.forget(web3, me)
            raise as_reverted(err, function, decoder) from None
        except ChainUnreachable:
            NONCES.forget(web3, me)
            raise
        except Web3Exception as err:  # refused for another reason (e.g. funds): never sent, the nonce is free again
            NONCES.forget(web3, me)
            raise TransactionFailed(function, tx_hash, f"refused: {err}") from err
        if receipt["status"] != 1:
            NONCES.forget(web3, me)
            raise RevertedOnChain(function, tx_hash, "reverted on chain after passing estimation")
        if once is not None:
            once.journal.record_confirmed(once.kind, once.key, tx_hash)
        return receipt
    raise SendConflict(function, tx_hash, f"another transaction of {me} took the nonce {attempts} times in a row")


def broadcast(web3: Web3, raw: bytes, sender: str, function: str, policy: ResendPolicy | None = None) -> TxReceipt:
    """Send the pre-signed `raw` and return its receipt (resent on connection failures and whenever the chain
    lost it); TransactionFailed when another transaction took its nonce or the receipt does not come."""
    policy = policy or _tx.RESEND_POLICY
    tx_hash, nonce = tx_hash_of(raw), nonce_of(raw)
    try:
        return settle(web3, sender, function, tx_hash, nonce, policy, raw)
    except NonceTaken:
        raise TransactionFailed(function, tx_hash, f"nonce {nonce} was used by another transaction") from None
    except StillPending:
        raise TransactionFailed(function, tx_hash, f"not mined after {policy.receipt_timeout_s:.0f}s") from None


def broadcast_all(web3: Web3, raws: Sequence[bytes]) -> list[str]:
    """Hand every pre-signed transaction to the node without waiting (benchmarks and batches mine them
    together); their hashes. ChainUnreachable when the node does not answer."""
    try:
        for raw in raws:
            web3.eth.send_raw_transaction(raw)
    except CONNECTION_ERRORS as err:
        raise ChainUnreachable(endpoint_of(web3), f"sending a batch: {err}") from err
    return [tx_hash_of(raw) for raw in raws]


def send_batch(web3: Web3, account: LocalAccount, txs: Sequence[TxParams], function: str,
               decoder: ErrorDecoder | None, skip: Sequence[str] = (), sign: Signer | None = None) -> list[bool]:
    """Send every transaction and wait for all of them: each is estimated and signed (consecutive nonces) first,
    then all are broadcast, then their receipts awaited, so N transactions cost about one block, not one block
    each (a window where 128 of 256 trainers missed their reveal kept each validator 92 s from publishing, one
    reportMissedReveal per 1-second block: `python -m bench.load --population 256`, validator stage `other`).
    Per transaction: True when it was mined and succeeded; False when its estimate reverted with an error named
    in `skip`, or it was mined and reverted, or its nonce went to another transaction (the caller checks the
    chain). Other reverts raise; a receipt that does not come is TransactionPending."""
    policy = _tx.RESEND_POLICY
    me = account.address
    signed: list[bytes | None] = []
    for params in txs:
        try:
            signed.append(sign(params) if sign is not None
                          else _tx.sign_transaction(web3, account, params, function, decoder, policy))
        except ContractReverted as err:
            if err.error_name not in skip:
                NONCES.forget(web3, me)
                raise
            signed.append(None)
    try:
        broadcast_all(web3, [raw for raw in signed if raw is not None])
    except (ChainUnreachable, Web3Exception) as err:
        NONCES.forget(web3, me)  # later nonces may never have been sent: sign them afresh next time
        raise ChainUnreachable(endpoint_of(web3), f"{function}: {err}") from err
    outcomes: list[bool] = []
    for raw in signed:
        if raw is None:
            outcomes.append(False)
            continue
        tx_hash = tx_hash_of(raw)
        try:
            receipt = settle(web3, me, function, tx_hash, nonce_of(raw), policy, raw, sent=True)
        except NonceTaken:
            outcomes.append(False)
            continue
        except StillPending:
            NONCES.forget(web3, me)
            raise TransactionPending(function, tx_hash, f"not mined after {policy.receipt_timeout_s:.0f}s") from None
        except Web3Exception as err:
            raise ChainUnreachable(endpoint_of(web3), f"{function} (tx {tx_hash}): {err}") from err
        outcomes.append(receipt["status"] == 1)
    if not all(outcomes):
        NONCES.forget(web3, me)
    return outcomes


def _resume(web3: Web3, sender: str, function: str, recorded: RecordedTx, policy: ResendPolicy) -> TxReceipt | None:
    """The receipt of a journalled transaction if it succeeded (waiting while it is in the mempool); None when it
    reverted or the chain does not hold it (never broadcast, or dropped): its effect is not ours to claim."""
    tx_hash = recorded.tx_hash
    try:
        receipt = receipt_of(web3, tx_hash)
        if receipt is None and not recorded.confirmed:
            pending = transaction_of(web3, tx_hash)
            if pending is not None:
                receipt = settle(web3, sender, function, tx_hash, int(pending["nonce"]), policy, None)
    except NonceTaken:
        return None
    except StillPending:
        raise TransactionPending(function, tx_hash, f"still not mined after {policy.receipt_timeout_s:.0f}s") from None
    except (*CONNECTION_ERRORS, Web3Exception) as err:
        raise ChainUnreachable(endpoint_of(web3), f"{function} (tx {tx_hash}): {err}") from err
    return receipt if receipt is not None and receipt["status"] == 1 else None


