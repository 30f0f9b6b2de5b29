"""Signing transactions and decoding reverts. Every transaction is estimated first (a revert surfaces there with
its custom error), given its nonce, gas and price, and signed with eth-account; contracts/sending.py sends it.
RESEND_POLICY bounds both: how many connection failures in a row are retried, and how long a receipt is
awaited."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
import rlp
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import (
    BadResponseFormat,
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    Web3Exception,
)
from web3.types import Nonce, TxParams

from contracts.errors import ChainUnreachable, ContractReverted, TransactionFailed

# Estimates run against the pending state; txs that land before ours in the same block may make it cost more.
# Above all a storage slot that ours was estimated to rewrite can turn into a fresh one (~17k gas more): two weight
# reveals estimated together, the second taking a revealer slot no earlier epoch wrote, used 59,502 and ran out at
# 77,877 with the 25% alone (tests/contracts/test_same_block_reveals.py). Only the gas used is paid.
GAS_HEADROOM = 1.25
GAS_HEADROOM_FIXED = 25_000
RECEIPT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ResendPolicy:
    """How long a send survives a flaky RPC: `retries` connection failures in a row (each followed by a wait of
    `backoff_s`·2^n, at most `max_backoff_s`: about 20 s of outage with the defaults), and `receipt_timeout_s`
    of waiting for the receipt in all.

    Receipt polling: the first poll comes after `poll_s` (a block may already be due), later ones back off by
    `poll_growth` to `max_poll_s`, and the "was it dropped?" check (two more RPCs) runs at most every
    `dropped_check_s`. Polling at a flat 50 ms with both checks each time cost 3 RPCs per 50 ms per waiting
    transaction: 256 trainers waiting on 1-second blocks made ~15,000 RPCs/s, which an RPC provider rate-limits
    and which took ~120 ms of client CPU per transaction (web3.py, 4 ms per call measured under load); with the
    backoff it is 6-7 calls per second (measured on the trainer's sender, then node/txs.py, whose polling this is)."""

    retries: int = 8
    backoff_s: float = 0.25
    max_backoff_s: float = 4.0
    receipt_timeout_s: float = RECEIPT_TIMEOUT_S
    poll_s: float = 0.05
    max_poll_s: float = 0.5
    poll_growth: float = 1.5
    dropped_check_s: float = 1.0


RESEND_POLICY = ResendPolicy()
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
        """The next nonce: the chain's pending count, or more when this process signed transactions it has not
        sent yet (batches). Read every time: another process (the user's `claim` beside a running node) may
        have sent from the same account since."""
        key = (endpoint_of(web3), address)
        # Read outside the lock: one lock serves every account of the process, so an RPC under it queues
        # unrelated accounts behind each other (a population host's 64 identities revealing at once: take() was
        # where the profiled reveal phase waited longest). A read older than a nonce handed out meanwhile is
        # covered by the max below.
        pending = web3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
        with self._lock:
            nonce = max(self._next.get(key, 0), pending)
            self._next[key] = nonce + 1
            return nonce

    def forget(self, web3: Web3, address: str) -> None:
        with self._lock:
            self._next.pop((endpoint_of(web3), address), None)

    def reset(self) -> None:
        """Forget every account (after evm_revert the chain's nonces go back)."""
        with self._lock:
            self._next.clear()


def endpoint_of(web3: Web3) -> str:
    return str(getattr(web3.provider, "endpoint_uri", id(web3.provider)))


NONCES = NonceTracker()


def sign_transaction(
    web3: Web3, account: LocalAccount, tx: TxParams, function: str, decoder: ErrorDecoder | None = None,
    policy: ResendPolicy | None = None,
) -> bytes:
    """Estimate (surfacing reverts), fill nonce/gas/price, sign; returns the raw signed transaction. Connection
    failures are retried under `policy` (the module's RESEND_POLICY when None, read at call time)."""
    policy = policy or RESEND_POLICY
    endpoint = endpoint_of(web3)
    tx = dict(tx)  # type: ignore[assignment]
    tx["from"] = account.address
    for failures in range(policy.retries + 1):
        try:
            if "gas" not in tx:
                tx["gas"] = int(web3.eth.estimate_gas(tx, "pending") * GAS_HEADROOM) + GAS_HEADROOM_FIXED
            if "gasPrice" not in tx and "maxFeePerGas" not in tx:
                tx["gasPrice"] = web3.eth.gas_price
            if "chainId" not in tx:
                tx["chainId"] = web3.eth.chain_id
            tx["nonce"] = Nonce(NONCES.take(web3, account.address))
            break
        except (ContractCustomError, ContractPanicError, ContractLogicError) as err:
            raise as_reverted(err, function, decoder) from None
        except (requests.ConnectionError, requests.Timeout, OSError, BadResponseFormat) as err:
            # Nothing was sent yet (the nonce is taken last): reading again after a blip is safe.
            if failures == policy.retries:
                raise ChainUnreachable(endpoint, str(err)) from err
            time.sleep(min(policy.backoff_s * 2**failures, policy.max_backoff_s))
        except Web3Exception as err:  # e.g. insufficient funds for the value + gas
            raise TransactionFailed(function, "(not sent)", str(err)) from err
    tx.pop("from", None)
    signed = account.sign_transaction(tx)  # type: ignore[arg-type]
    return bytes(signed.raw_transaction)


def nonce_of(raw: bytes) -> int:
    """The nonce inside a signed transaction (legacy RLP list, or EIP-2718 typed: type byte, then chainId)."""
    if raw[0] >= 0xC0:
        return int.from_bytes(rlp.decode(raw)[0], "big")
    return int.from_bytes(rlp.decode(raw[1:])[1], "big")


def tx_hash_of(raw: bytes) -> str:
    """The 0x-prefixed hash a node will know the signed transaction `raw` by."""
    return "0x" + keccak(raw).hex()
