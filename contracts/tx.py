"""Sending locally signed transactions and decoding reverts. Every transaction is estimated first (a revert
surfaces there with its custom error), signed with eth-account, sent raw, and awaited."""

from __future__ import annotations

import threading
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    TimeExhausted,
    Web3Exception,
)
from web3.types import Nonce, TxParams, TxReceipt

from contracts.errors import ChainUnreachable, ContractReverted, TransactionFailed

GAS_HEADROOM = 1.25  # estimates run against the pending state; later txs in the same block may cost more
RECEIPT_TIMEOUT_S = 60.0
_ERROR_STRING = keccak(text="Error(string)")[:4]
_PANIC = keccak(text="Panic(uint256)")[:4]


class ErrorDecoder:
    """Maps revert data (selector + ABI-encoded args) to the custom error it names."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            self._errors[selector] = (item["name"], [i["name"] for i in item["inputs"]], types)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]] | None:
        selector, body = data[:4], data[4:]
        if selector == _ERROR_STRING:
            return "Error", {"message": abi_decode(["string"], body)[0]}
        if selector == _PANIC:
            return "Panic", {"code": abi_decode(["uint256"], body)[0]}
        if selector not in self._errors:
            return None
        name, names, types = self._errors[selector]
        values = [
            to_checksum_address(v) if t == "address" else v for t, v in zip(types, abi_decode(types, body), strict=True)
        ]
        return name, dict(zip(names, values, strict=True))


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return str(item["type"])


def revert_data(err: Exception) -> bytes | None:
    """The raw revert bytes carried by a web3 contract error, if any."""
    data = getattr(err, "data", None)
    if isinstance(data, dict):  # Ganache puts the revert bytes under "result"
        data = data.get("data") or data.get("result")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    return None


def as_reverted(err: Exception, function: str, decoder: ErrorDecoder | None) -> Exception:
    """Turn a web3 revert into ContractReverted (or TransactionFailed when it names no known error)."""
    data = revert_data(err)
    decoded = decoder.decode(data) if decoder and data else None
    if decoded is not None:
        return ContractReverted(decoded[0], decoded[1], function)
    if isinstance(err, ContractLogicError) and err.message:
        return ContractReverted("Error", {"message": err.message}, function)
    return TransactionFailed(function, "(not sent)", str(err))


class NonceTracker:
    """Hands out consecutive nonces per (RPC endpoint, account); resynchronises from the chain after a failure.
    Keyed by endpoint too: one process may talk to several chains with the same dev keys."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, web3: Web3, address: str) -> int:
        key = (_endpoint(web3), address)
        with self._lock:
            if key not in self._next:
                self._next[key] = web3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
            nonce = self._next[key]
            self._next[key] = nonce + 1
            return nonce

    def forget(self, web3: Web3, address: str) -> None:
        with self._lock:
            self._next.pop((_endpoint(web3), address), None)

    def reset(self) -> None:
        """Forget every account (after evm_revert the chain's nonces go back)."""
        with self._lock:
            self._next.clear()


def _endpoint(web3: Web3) -> str:
    return str(getattr(web3.provider, "endpoint_uri", id(web3.provider)))


NONCES = NonceTracker()


def sign_transaction(
    web3: Web3, account: LocalAccount, tx: TxParams, function: str, decoder: ErrorDecoder | None = None
) -> bytes:
    """Estimate (surfacing reverts), fill nonce/gas/price, sign; returns the raw signed transaction."""
    endpoint = _endpoint(web3)
    tx = dict(tx)  # type: ignore[assignment]
    tx["from"] = account.address
    try:
        if "gas" not in tx:
            tx["gas"] = int(web3.eth.estimate_gas(tx, "pending") * GAS_HEADROOM)
        if "gasPrice" not in tx and "maxFeePerGas" not in tx:
            tx["gasPrice"] = web3.eth.gas_price
        if "chainId" not in tx:
            tx["chainId"] = web3.eth.chain_id
        tx["nonce"] = Nonce(NONCES.take(web3, account.address))
    except (ContractCustomError, ContractPanicError, ContractLogicError) as err:
        raise as_reverted(err, function, decoder) from None
    except (requests.ConnectionError, ConnectionError, OSError) as err:
        raise ChainUnreachable(endpoint, str(err)) from err
    except Web3Exception as err:  # e.g. insufficient funds for the value + gas
        raise TransactionFailed(function, "(not sent)", str(err)) from err
    tx.pop("from", None)
    signed = account.sign_transaction(tx)  # type: ignore[arg-type]
    return bytes(signed.raw_transaction)


def send_transaction(
    web3: Web3, account: LocalAccount, tx: TxParams, function: str, decoder: ErrorDecoder | None = None
) -> TxReceipt:
    """Sign, send and await one transaction; raises ContractReverted / TransactionFailed / ChainUnreachable."""
    raw = sign_transaction(web3, account, tx, function, decoder)
    endpoint = _endpoint(web3)
    try:
        tx_hash = web3.eth.send_raw_transaction(raw)
        receipt = web3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.01)
    except (ContractCustomError, ContractPanicError, ContractLogicError) as err:
        NONCES.forget(web3, account.address)
        raise as_reverted(err, function, decoder) from None
    except TimeExhausted as err:
        NONCES.forget(web3, account.address)
        raise TransactionFailed(function, "(pending)", f"no receipt after {RECEIPT_TIMEOUT_S:.0f}s") from err
    except (requests.ConnectionError, ConnectionError, OSError) as err:
        NONCES.forget(web3, account.address)
        raise ChainUnreachable(endpoint, str(err)) from err
    except Web3Exception as err:
        NONCES.forget(web3, account.address)
        raise TransactionFailed(function, "(not sent)", str(err)) from err
    if receipt["status"] != 1:
        raise TransactionFailed(function, receipt["transactionHash"].hex(), "reverted after estimation")
    return receipt
