"""The trainer's transactions, with their hash journalled before the broadcast: a node killed right after
sending finds its tx on restart (mined, or still in the mempool) instead of sending a second one blind.

They survive the user's own transactions: a `node claim` or any wallet sending from the same key meanwhile
takes nonces this process did not hand out. Each attempt reads the next nonce from the chain's pending state,
and an attempt whose nonce another transaction took (refused as too low or as an underpriced replacement, or
dropped for a transaction that was mined instead) is signed again on a fresh nonce. What is still refused
after that is `SendConflict`, which the loop treats as transient: a reveal is retried until its period
closes, never given up while it could still land."""

from __future__ import annotations

import time
from collections.abc import Callable

from web3.contract.contract import ContractFunction
from web3.exceptions import TransactionNotFound, Web3Exception, Web3RPCError
from web3.types import TxReceipt

from contracts.client import TrainingRunClient
from contracts.errors import ChainUnreachable, TransactionFailed, TransactionPending
from contracts.tx import NONCES, RECEIPT_TIMEOUT_S, nonce_of, tx_hash_of

NONCE_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.2
# Receipt polling: the first poll comes quickly (a block may already be due), later ones back off to MAX_POLL_S,
# and the "was it dropped?" check (two more RPCs) runs at most every DROPPED_CHECK_S. Polling at a flat 50 ms
# with both checks each time cost 3 RPCs per 50 ms per waiting transaction: 256 trainers waiting on 1-second
# blocks made ~15,000 RPCs/s, which an RPC provider rate-limits and which took ~120 ms of client CPU per
# transaction here (web3.py, 4 ms per call measured under load); with the backoff it is 6-7 calls per second.
POLL_S = 0.05
MAX_POLL_S = 0.5
POLL_GROWTH = 1.5
DROPPED_CHECK_S = 1.0
# How nodes refuse a transaction whose nonce another one has taken (Anvil, Geth, Erigon, Besu word it so).
NONCE_TAKEN = ("nonce too low", "replacement transaction underpriced", "nonce has already been used",
               "replacement fee too low", "already imported")
# How they refuse the very same signed bytes again: this transaction is already in their pool.
SAME_TX = ("already known", "known transaction")


class SendConflict(TransactionFailed):
    """Another transaction of the same account took the nonce at every attempt. Transient: retry later."""


class RevertedOnChain(TransactionFailed):
    """Passed estimation, reverted when mined: the state moved in between (e.g. a window boundary passed)."""


def send_recorded(client: TrainingRunClient, call: ContractFunction, name: str, record: Callable[[str], None]) -> str:
    """Sign (reverts surface decoded from the estimate), `record(tx_hash)`, broadcast, await the receipt;
    re-sign on a fresh nonce when another transaction of the account took this one's."""
    web3 = client.web3
    me = client.address_of_account
    tx_hash = "(not sent)"
    for attempt in range(NONCE_ATTEMPTS):
        if attempt:
            time.sleep(CONFLICT_BACKOFF_S * attempt)
        NONCES.forget(web3, me)  # the chain's pending count, not a count kept here: other commands send too
        raw = client.signed(call, name)
        tx_hash = tx_hash_of(raw)
        record(tx_hash)
        try:
            web3.eth.send_raw_transaction(raw)
        except Web3RPCError as err:
            text = str(err).lower()
            if any(words in text for words in NONCE_TAKEN):
                continue
            if not any(words in text for words in SAME_TX):
                NONCES.forget(web3, me)
                raise TransactionFailed(name, tx_hash, str(err)) from err
        except OSError as err:  # the journal holds the hash: the next poll finds it, or sends again
            NONCES.forget(web3, me)
            raise ChainUnreachable(client.rpc_url, str(err)) from err
        receipt = _await(client, tx_hash, nonce_of(raw), name)
        if receipt is None:
            continue  # dropped from the pool: its nonce went to another transaction of this account
        if receipt["status"] != 1:
            NONCES.forget(web3, me)
            raise RevertedOnChain(name, tx_hash, "reverted on chain")
        return tx_hash
    NONCES.forget(web3, me)
    raise SendConflict(name, tx_hash, f"another transaction of {me} took the nonce {NONCE_ATTEMPTS} times in a row")


def _await(client: TrainingRunClient, tx_hash: str, nonce: int, name: str) -> TxReceipt | None:
    """The receipt; None when the chain dropped the transaction because another one used its nonce;
    TransactionPending when it is still in the pool after the wait (the journal has its hash)."""
    web3 = client.web3
    me = client.address_of_account
    began = time.monotonic()
    deadline = began + RECEIPT_TIMEOUT_S
    pause = POLL_S
    checked = began
    try:
        while True:
            try:
                return web3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                pass
            now = time.monotonic()
            if now - checked >= DROPPED_CHECK_S:
                checked = now
                if not _known(client, tx_hash) and web3.eth.get_transaction_count(me, "latest") > nonce:  # type: ignore[arg-type]
                    return None
            if now > deadline:
                raise TransactionPending(name, tx_hash, f"not mined after {RECEIPT_TIMEOUT_S:.0f}s")
            time.sleep(pause)
            pause = min(MAX_POLL_S, pause * POLL_GROWTH)
    except (OSError, Web3Exception) as err:
        raise ChainUnreachable(client.rpc_url, str(err)) from err


def _known(client: TrainingRunClient, tx_hash: str) -> bool:
    try:
        client.web3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        return False
    return True


def tx_in_flight(client: TrainingRunClient, tx_hash: str) -> bool:
    """True while `tx_hash` waits in the mempool. False when it was mined (its effect, if any, is visible on
    chain) or the chain never saw it (killed before the broadcast): sending again is then safe."""
    web3 = client.web3
    try:
        web3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        return False
    except TransactionNotFound:
        try:
            web3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            return True
        except TransactionNotFound:
            return False
    except (OSError, Web3Exception) as err:
        raise ChainUnreachable(client.rpc_url, str(err)) from err
