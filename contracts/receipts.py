"""The one "is it mined yet?" check, and the loop that awaits a receipt while re-sending the same signed bytes
(contracts/sending.py sends through it). Nothing here signs or journals: it only reads the chain and re-sends
bytes signed already."""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

import requests
from web3 import Web3
from web3.exceptions import BadResponseFormat, TransactionNotFound, Web3Exception, Web3RPCError
from web3.types import TxReceipt

from contracts.errors import ChainUnreachable
from contracts.tx import ResendPolicy, endpoint_of

# How nodes refuse the very same signed bytes again: this transaction is already in their pool.
SAME_TX = ("already known", "known transaction")
# How nodes (Anvil, Geth, Erigon, Besu) refuse a transaction whose nonce another one has taken. On a resend the
# other one may be our own, mined meanwhile: the receipt lookup that follows tells.
NONCE_TAKEN = ("nonce too low", "replacement transaction underpriced", "nonce has already been used",
               "replacement fee too low", "already imported")
# No answer, a cut answer or a garbled one: whether a send reached the chain is unknown, and sending the same
# signed bytes again is safe either way.
CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, OSError, ValueError, BadResponseFormat)


class TxState(Enum):
    """Where a transaction stands, as the node sees it."""

    SUCCEEDED = "mined, succeeded"
    REVERTED = "mined, reverted"
    PENDING = "in the mempool"
    UNKNOWN = "unknown to the node"


class NonceTaken(Exception):
    """Another transaction of the account was mined with (or holds in the pool) this one's nonce; or, awaiting a
    journalled hash without its bytes, the node lost it. Caught inside contracts/."""


class StillPending(Exception):
    """The receipt wait ran out while the transaction may still be mined. Caught inside contracts/."""


def tx_state(web3: Web3, tx_hash: str) -> TxState:
    """Where the transaction `tx_hash` stands; ChainUnreachable when the node does not answer."""
    try:
        receipt = receipt_of(web3, tx_hash)
        if receipt is not None:
            return TxState.SUCCEEDED if receipt["status"] == 1 else TxState.REVERTED
        return TxState.PENDING if _known(web3, tx_hash) else TxState.UNKNOWN
    except (*CONNECTION_ERRORS, Web3Exception) as err:
        raise ChainUnreachable(endpoint_of(web3), f"tx {tx_hash}: {err}") from err


def receipt_hash(receipt: TxReceipt) -> str:
    """The 0x-prefixed hash of the transaction a receipt is for."""
    return "0x" + bytes(receipt["transactionHash"]).hex()


def settle(web3: Web3, sender: str, function: str, tx_hash: str, nonce: int, policy: ResendPolicy,
           raw: bytes | None, sent: bool = False) -> TxReceipt:
    """Await the receipt of `tx_hash` (nonce `nonce` of `sender`), sending `raw` first unless `sent`, and again
    after every connection failure and whenever the chain no longer knows it (restarted from a state saved
    before it was mined). Without `raw` (a journalled hash from an earlier run) a lost transaction cannot be
    resent: NonceTaken then. Raises NonceTaken / StillPending / ChainUnreachable."""
    began = time.monotonic()
    checked = began
    pause = policy.poll_s
    failures = 0
    must_send = raw is not None and not sent
    while True:
        try:
            refused = False
            if must_send and raw is not None:
                must_send = False
                refused = _send_raw(web3, raw)
            receipt = receipt_of(web3, tx_hash)
            if receipt is not None:
                return receipt
            if refused and not _known(web3, tx_hash):
                raise NonceTaken  # refused for its nonce, not ours mined nor ours in the pool: another one's
            now = time.monotonic()
            if now - checked >= policy.dropped_check_s:
                checked = now
                if not _known(web3, tx_hash):
                    if raw is None or web3.eth.get_transaction_count(sender, "latest") > nonce:  # type: ignore[arg-type]
                        raise NonceTaken
                    must_send = True  # lost with the mempool of a restarted chain: the same bytes, once more
            failures = 0
        except CONNECTION_ERRORS as err:
            failures += 1
            if failures > policy.retries:
                raise ChainUnreachable(endpoint_of(web3), f"{function} (tx {tx_hash}): {err}") from err
            must_send = raw is not None  # whether the send reached the chain is unknown: the same bytes again
            time.sleep(min(policy.backoff_s * 2 ** (failures - 1), policy.max_backoff_s))
            continue
        if time.monotonic() - began > policy.receipt_timeout_s:
            raise StillPending
        time.sleep(pause)
        pause = min(policy.max_poll_s, pause * policy.poll_growth)


def _send_raw(web3: Web3, raw: bytes) -> bool:
    """Hand `raw` to the node; True when it refused it for its nonce. Even a first send can meet its own bytes:
    web3's provider retries a request that timed out (a stalled answer), so "nonce too low" may mean ours was
    mined meanwhile, and only the receipt lookup that follows tells."""
    try:
        web3.eth.send_raw_transaction(raw)
    except Web3RPCError as err:
        text = str(err).lower()
        if any(words in text for words in SAME_TX):
            return False  # in the pool already: the receipt lookup that follows waits for it
        if any(words in text for words in NONCE_TAKEN):
            return True
        raise
    return False


def receipt_of(web3: Web3, tx_hash: str) -> TxReceipt | None:
    try:
        return web3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        return None


def transaction_of(web3: Web3, tx_hash: str) -> dict[str, Any] | None:
    try:
        return dict(web3.eth.get_transaction(tx_hash))  # type: ignore[arg-type]
    except TransactionNotFound:
        return None


def _known(web3: Web3, tx_hash: str) -> bool:
    """True if the node holds the transaction (pending or mined)."""
    return transaction_of(web3, tx_hash) is not None
