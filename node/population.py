"""Many trainer identities in one process, for load runs (`python -m bench.load --population N`).

Each identity is a full `TrainerNode` (node/runner.py), unchanged: its own key, stake, data assignment, carried
error feedback and AdamW moments, journal and payload files; it trains the model, encodes with the run's codec,
commits, adds its own payload to IPFS and reveals, each with its own transactions. On chain and on IPFS the
population is N separate nodes. What the identities share is what one machine would share anyway: the dataset,
one IPFS client, one chain connection, and the chain reads they all make.

Shared reads (`SharedReads`): N nodes polling the same views every block cost N × (block number, run record,
publications, commits, own commitment) RPCs; here they are answered once per block for all identities, and the
N `commitmentOf` reads go out as one JSON-RPC batch. A receipt seen by any identity moves the shared block on
(`ObservingProvider`), and an identity that just signed a transaction reads its own commitment directly until a
batch newer than the signing exists, so no node acts on a status its own transaction outdated.

Scheduling (node/population_host.py's `Population`): instead of N loops polling every 0.2 s, one loop steps
an identity only when it has something due (a journalled window to commit or reveal, or a window to train), on
a thread pool; identities
train one at a time (the tiny model's steps are bound by the interpreter lock anyway), while others wait for
their receipts. Every identity's sync deadline is the population's: its trainings queue behind each other, so
the deadline leaves room for all of them (`TrainerNode.training_blocks`)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from torch import Tensor
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint, RPCResponse, TxParams

from contracts.client import TrainingRunClient
from contracts.errors import ChainUnreachable
from contracts.rpc import CACHED_FOREVER
from contracts.types import CanonicalModel, Commit, CommitStatus, Publication, RunInfo, ValidatorInfo
from contracts.views import TrainingRunViews
from node.journal import WindowEntry
from node.policy import TrainingContext, UpdatePolicy
from node.runner import SilentObserver, TrainerNode

BLOCK_TTL_S = 0.1  # how long a block number read serves every identity
COMMITMENT_OF = keccak(text="commitmentOf(uint256,uint256,address)")[:4]


def population_account(label: str, index: int) -> LocalAccount:
    """Identity `index` of a load run's population: a key derived from a public label, for a local chain only."""
    from eth_account import Account

    return Account.from_key(keccak(text=f"trainmarket-population/{label}/{index}"))


class SharedReads:
    """The chain reads of every identity of this process, answered once per block (see the module docstring)."""

    def __init__(self, views: TrainingRunViews, rpc_url: str, addresses: Iterable[str]) -> None:
        self.views = views
        self.rpc_url = rpc_url
        self.addresses = [to_checksum_address(a) for a in addresses]
        self._lock = threading.Lock()
        self._fetch = threading.Lock()  # one fetch of a missing entry at a time: N threads miss together
        self._block = -1
        self._read_at = 0.0
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._http = httpx.Client(timeout=30.0)
        self.batches = 0  # JSON-RPC batches sent (for the load figures)

    def block_number(self) -> int:
        with self._lock:
            if time.monotonic() - self._read_at < BLOCK_TTL_S:
                return self._block
        return self.observe(self.views.block_number())

    def observe(self, block: int) -> int:
        """The chain is at `block` or later: forget what was read before it."""
        with self._lock:
            self._read_at = time.monotonic()
            if block > self._block:
                self._block = block
                self._memo.clear()
            return self._block

    def memoised(self, key: tuple[Any, ...], fetch: Callable[[], Any]) -> Any:
        self.block_number()
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        with self._fetch:
            with self._lock:
                if key in self._memo:
                    return self._memo[key]
                block = self._block
            value = fetch()
            with self._lock:
                if self._block == block:
                    self._memo[key] = value
            return value

    def run(self, run_id: int) -> RunInfo:
        return self.memoised(("run", run_id), lambda: self.views.get_run(run_id))

    def publications(self, run_id: int, window: int, reports: bool = True) -> dict[str, Publication]:
        return self.memoised(("publications", run_id, window, reports),
                             lambda: self.views.publications(run_id, window, reports))

    def commits(self, run_id: int, window: int) -> list[Commit]:
        return self.memoised(("commits", run_id, window),
                             lambda: self.views.commits(run_id, window))

    def validator_info(self, run_id: int, validator: str) -> ValidatorInfo:
        return self.memoised(("validator", run_id, validator.lower()),
                             lambda: self.views.validator_info(run_id, validator))

    def canonical_model(self, run_id: int, window: int) -> CanonicalModel:
        # Its `final` flag compares the deadline with the block number: the memo is per block, so it holds.
        return self.memoised(("canonical", run_id, window),
                             lambda: self.views.canonical_model(run_id, window))

    def commitments(self, run_id: int, window: int) -> tuple[int, dict[str, tuple[bytes, CommitStatus]]]:
        """(block the batch was read at, address → commitmentOf) for every identity, in one JSON-RPC batch."""
        return self.memoised(("commitments", run_id, window),
                             lambda: self._batch_commitments(run_id, window))

    def _batch_commitments(self, run_id: int, window: int) -> tuple[int, dict[str, tuple[bytes, CommitStatus]]]:
        target = self.views.contract.address
        calls: list[dict[str, Any]] = [{"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []}]
        for i, address in enumerate(self.addresses, start=1):
            data = COMMITMENT_OF + abi_encode(["uint256", "uint256", "address"], [run_id, window, address])
            calls.append({"jsonrpc": "2.0", "id": i, "method": "eth_call",
                          "params": [{"to": target, "data": "0x" + data.hex()}, "latest"]})
        try:
            answer = self._http.post(self.rpc_url, json=calls)
            answer.raise_for_status()
            results = {int(r["id"]): r for r in answer.json()}
            block = int(results[0]["result"], 16)
            out: dict[str, tuple[bytes, CommitStatus]] = {}
            for i, address in enumerate(self.addresses, start=1):
                prefix, status = abi_decode(["bytes32", "uint8"], bytes.fromhex(results[i]["result"][2:]))
                out[address.lower()] = (bytes(prefix), CommitStatus(status))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            raise ChainUnreachable(self.rpc_url, f"commitmentOf batch: {err}") from err
        self.batches += 1
        return block, out

    def close(self) -> None:
        self._http.close()


class ObservingProvider(HTTPProvider):
    """The process's one chain connection. Every receipt it sees tells `observe` how far the chain got, so a read
    shared by all identities is never older than a transaction one of them saw mined: a node that just committed
    must not read its own commitment from a batch taken before the commit's block (it would commit again)."""

    def __init__(self, rpc_url: str, timeout: float = 30.0) -> None:
        super().__init__(rpc_url, request_kwargs={"timeout": timeout}, cache_allowed_requests=True,
                         cacheable_requests=CACHED_FOREVER)
        self.observe: Callable[[int], object] = lambda block: None
        self.calls: Counter[str] = Counter()  # requests by method, cached answers included (bench.reveals)

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.calls[str(method)] += 1
        answer = super().make_request(method, params)
        if method == "eth_getTransactionReceipt":
            result = answer.get("result")
            if isinstance(result, dict) and result.get("blockNumber"):
                self.observe(int(str(result["blockNumber"]), 16))
        return answer


class PopulationClient(TrainingRunClient):
    """One identity's client: transactions with its own key, the shared views read through `SharedReads`."""

    def __init__(self, web3: Web3, address: str, account: LocalAccount, from_block: int, shared: SharedReads) -> None:
        super().__init__(web3, address, account, from_block)
        self.shared = shared
        self._signed_at = -1  # chain head when this identity last signed a transaction

    def block_number(self) -> int:
        return self.shared.block_number()

    def get_run(self, run_id: int) -> RunInfo:
        return self.shared.run(run_id)

    def publications(self, run_id: int, window: int, reports: bool = True) -> dict[str, Publication]:
        return self.shared.publications(run_id, window, reports)

    def commits(self, run_id: int, window: int) -> list[Commit]:
        return self.shared.commits(run_id, window)

    def validator_info(self, run_id: int, validator: str) -> ValidatorInfo:
        return self.shared.validator_info(run_id, validator)

    def canonical_model(self, run_id: int, window: int) -> CanonicalModel:
        return self.shared.canonical_model(run_id, window)

    def commitment_of(self, run_id: int, window: int, trainer: str) -> tuple[bytes, CommitStatus]:
        read_at, batch = self.shared.commitments(run_id, window)
        mine = batch.get(trainer.lower())
        if mine is None or read_at <= self._signed_at:  # not one of ours, or older than our own last transaction
            return super().commitment_of(run_id, window, trainer)
        return mine

    def _sign(self, params: TxParams, name: str) -> bytes:
        # The true head (not the shared, possibly 0.1 s old one): the transaction lands after it.
        self._signed_at = self.shared.observe(TrainingRunViews.block_number(self))
        return super()._sign(params, name)


class SerialTraining(UpdatePolicy):
    """The honest policy, with the identities of one process training one at a time."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        with self.lock:
            return super().make_delta(ctx)


@dataclass
class SyncLog(SilentObserver):
    """A node observer that writes one JSON line per trained window: the block training began at and the
    identity's sync deadline then, so a load run can tell whether the model of the window before was published
    in time to train from (bench.load's on-time definition)."""

    path: Path
    block_number: Callable[[], int]
    node: TrainerNode | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def training(self, window: int, steps: int) -> None:
        assert self.node is not None
        record = {"trainer": self.node.trainer.lower(), "window": window, "block": self.block_number(),
                  "deadline": self.node.sync_deadline(window)}
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def missed(self, entry: WindowEntry) -> None:
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps({"trainer": self.node.trainer.lower() if self.node else "", "missed": entry.window,
                                  "note": entry.note}) + "\n")
