"""The trainer's transactions, with their hash journalled before the broadcast: a node killed right after
sending finds its tx on restart (mined, or still in the mempool) instead of sending a second one blind."""

from __future__ import annotations

from collections.abc import Callable

from web3.contract.contract import ContractFunction
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3Exception

from contracts.client import TrainingRunClient
from contracts.errors import ChainUnreachable, TransactionFailed, TransactionPending
from contracts.tx import NONCES, RECEIPT_TIMEOUT_S, tx_hash_of


def send_recorded(client: TrainingRunClient, call: ContractFunction, name: str, record: Callable[[str], None]) -> str:
    """Sign (reverts surface decoded from the estimate), `record(tx_hash)`, broadcast, await the receipt."""
    web3 = client.web3
    me = client.address_of_account
    raw = client.signed(call, name)
    tx_hash = tx_hash_of(raw)
    record(tx_hash)
    try:
        web3.eth.send_raw_transaction(raw)
        receipt = web3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.05  # type: ignore[arg-type]
        )
    except TimeExhausted as err:
        # Still in the mempool, maybe mined later: the journal has its hash, so the caller waits for it.
        raise TransactionPending(name, tx_hash, f"not mined after {RECEIPT_TIMEOUT_S:.0f}s") from err
    except OSError as err:
        NONCES.forget(web3, me)
        raise ChainUnreachable(client.rpc_url, str(err)) from err
    except Web3Exception as err:
        NONCES.forget(web3, me)
        raise TransactionFailed(name, tx_hash, str(err)) from err
    if receipt["status"] != 1:
        NONCES.forget(web3, me)
        raise TransactionFailed(name, tx_hash, "reverted on chain")
    return tx_hash


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
