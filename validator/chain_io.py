"""The validator's transactions, sent at most once across crashes.

Every settling transaction (publish a window; commit, then reveal, an epoch's weights) goes through `send_once`:
  1. if the chain already shows the effect (`done()`), nothing is sent;
  2. if the store holds a tx recorded as sent for the same (kind, key), its receipt is looked up by hash;
     a mined tx is the answer, a tx the chain never saw is sent again only if `done()` is still false;
  3. otherwise the tx is signed, recorded as pending *with its hash and nonce*, and only then broadcast.
So a SIGKILL between any two steps leaves a state a restart resolves without a blind second send. A tx that
is not mined within the wait raises TransactionPending: the loop retries the step, which waits for that tx."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from web3.contract.contract import ContractFunction
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3Exception

from contracts.client import TrainingRunClient
from contracts.errors import ChainUnreachable, ContractReverted, TransactionFailed, TransactionPending
from contracts.tx import NONCES, RECEIPT_TIMEOUT_S, nonce_of, tx_hash_of
from validator.store import ValidatorStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentTx:
    tx_hash: str  # 0x-prefixed
    nonce: int
    resumed: bool  # True when found on chain from an earlier (killed) run instead of being sent now


class TxSender:
    """Crash-safe sending of one validator account's settlement transactions."""

    def __init__(self, client: TrainingRunClient, store: ValidatorStore) -> None:
        self.client = client
        self.store = store

    def send_once(self, kind: str, key: str, call: ContractFunction, name: str,
                  done: Callable[[], bool]) -> SentTx | None:
        """Send `call` unless its effect is on chain; None when nothing had to be sent (done elsewhere/earlier).

        Raises ContractReverted / TransactionFailed / ChainUnreachable from the chain."""
        pending = self.store.pending_tx(kind, key)
        if pending is not None and pending.status == "confirmed":
            return SentTx(pending.tx_hash, pending.nonce, resumed=True)
        if pending is not None:
            mined = self.mined(pending.tx_hash)
            if mined is True:
                log.info("%s %s: found earlier tx %s mined", kind, key, pending.tx_hash)
                return SentTx(pending.tx_hash, pending.nonce, resumed=True)
            # Broadcast but not mined yet: wait for it rather than racing a second tx (which would take the next
            # nonce and revert, or worse, land too); still waiting is transient, retried on the next step.
            if mined is None:
                if self._wait(pending.tx_hash):
                    return SentTx(pending.tx_hash, pending.nonce, resumed=True)
                raise TransactionPending(name, pending.tx_hash, f"still not mined after {RECEIPT_TIMEOUT_S:.0f}s")
        if done():
            return None
        raw = self.client.signed(call, name)
        sent = SentTx(tx_hash_of(raw), nonce_of(raw), resumed=False)
        self.store.record_pending_tx(kind, key, sent.tx_hash, sent.nonce)
        web3 = self.client.web3
        try:
            web3.eth.send_raw_transaction(raw)
        except (OSError, ConnectionError) as err:
            NONCES.forget(web3, self.client.account.address)
            raise ChainUnreachable(self.client.rpc_url, str(err)) from err
        except Web3Exception as err:
            NONCES.forget(web3, self.client.account.address)
            raise TransactionFailed(name, sent.tx_hash, str(err)) from err
        if not self._wait(sent.tx_hash):
            raise TransactionPending(name, sent.tx_hash, f"not mined after {RECEIPT_TIMEOUT_S:.0f}s")
        return sent

    def mined(self, tx_hash: str) -> bool | None:
        """True: mined and succeeded; False: mined and failed, or unknown to the node; None: in the mempool."""
        web3 = self.client.web3
        try:
            receipt = web3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            try:
                web3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return False
            return None
        except (OSError, Web3Exception) as err:
            raise ChainUnreachable(self.client.rpc_url, str(err)) from err
        return bool(receipt["status"] == 1)

    def _wait(self, tx_hash: str) -> bool:
        web3 = self.client.web3
        try:
            receipt = web3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.05  # type: ignore[arg-type]
            )
        except TimeExhausted:
            return False
        except (OSError, Web3Exception) as err:
            raise ChainUnreachable(self.client.rpc_url, str(err)) from err
        if receipt["status"] != 1:
            NONCES.forget(web3, self.client.account.address)
            raise TransactionFailed("(resumed tx)", tx_hash, "reverted on chain")
        return True


def send_pipelined(client: TrainingRunClient, calls: Sequence[ContractFunction], name: str,
                   skip: Collection[str] = ()) -> list[bool]:
    """Send every call and wait for all of them: each is estimated and signed (consecutive nonces) first, then all
    are broadcast, then their receipts awaited, so N transactions cost about one block, not one block each (a
    window where 128 of 256 trainers missed their reveal kept each validator 92 s from publishing, one
    reportMissedReveal per 1-second block: `python -m bench.load --population 256`, validator stage `other`).
    Per call: True when it was mined and succeeded; False when its estimate reverted with an error named in
    `skip`, or it was mined and reverted (the caller checks the chain). Other reverts raise."""
    web3 = client.web3
    signed: list[bytes | None] = []
    for call in calls:
        try:
            signed.append(client.signed(call, name))
        except ContractReverted as err:
            if err.error_name not in skip:
                NONCES.forget(web3, client.account.address)
                raise
            signed.append(None)
    hashes: list[str | None] = []
    try:
        for raw in signed:
            if raw is not None:
                web3.eth.send_raw_transaction(raw)
            hashes.append(None if raw is None else tx_hash_of(raw))
    except (OSError, Web3Exception) as err:
        NONCES.forget(web3, client.account.address)  # later nonces were never sent: sign them afresh next time
        raise ChainUnreachable(client.rpc_url, f"{name}: {err}") from err
    outcomes: list[bool] = []
    for tx_hash in hashes:
        if tx_hash is None:
            outcomes.append(False)
            continue
        try:
            receipt = web3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.1  # type: ignore[arg-type]
            )
        except TimeExhausted as err:
            raise TransactionPending(name, tx_hash, f"not mined after {RECEIPT_TIMEOUT_S:.0f}s") from err
        except (OSError, Web3Exception) as err:
            raise ChainUnreachable(client.rpc_url, str(err)) from err
        outcomes.append(receipt["status"] == 1)
    if not all(outcomes):
        NONCES.forget(web3, client.account.address)
    return outcomes
