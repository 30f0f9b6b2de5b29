"""Chain faults: the RPC connection drops (lost requests, lost or garbled responses, stalls) and Anvil itself
is killed and restarted from a saved state. Every fault hits one `fund(run, amount)` transaction — a
non-idempotent call (each one mined adds to the pool), so a resend that was mined twice would show.

Ground truth, read afterwards straight from Anvil (not through the faulty connection): every RunFunded log
is traced to its transaction's (sender, nonce); `double_applied` counts (sender, nonce) pairs with more than
one log and amounts that appear twice, `lost` counts acknowledged funds (a receipt was returned) without
their log, and the run's pool must equal the sum of the logged amounts."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from base.units import ETH
from bench.faults import FaultOutcome, ScenarioFn
from bench.faults.proxy import Fault, FaultPlan, FaultProxy
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import deploy
from contracts.errors import ChainError
from contracts.sending import send_transaction
from contracts.tx import NONCES, ResendPolicy
from contracts.types import RunParams

PARAMS = RunParams.dev(keccak(b"faults"), grace_period_blocks=8, miss_threshold=2, min_validator_stake=2 * ETH,
                       reward_per_epoch=ETH)
RPC_TIMEOUT_S = 1.0  # the faulty connection's per-request timeout (a stall costs this long)
POLICY = ResendPolicy(retries=6, backoff_s=0.05, max_backoff_s=0.5, receipt_timeout_s=30.0)
# Faults on the RPC connection, each armed for a bounded number of exchanges (fewer than POLICY.retries).
RPC_FAULTS: tuple[tuple[str, FaultPlan], ...] = (
    ("send response lost after the tx reached the chain", FaultPlan(Fault.CUT, b"eth_sendRawTransaction", 1)),
    ("send request dropped before the chain", FaultPlan(Fault.DROP_REQUEST, b"eth_sendRawTransaction", 1)),
    ("send answer stalled", FaultPlan(Fault.STALL, b"eth_sendRawTransaction", 1)),
    ("send answer cut mid-body", FaultPlan(Fault.TRUNCATE_BODY, b"eth_sendRawTransaction", 1, after_bytes=20)),
    ("send answer garbled", FaultPlan(Fault.CORRUPT_BODY, b"eth_sendRawTransaction", 1, after_bytes=40)),
    ("receipt lookups cut twice", FaultPlan(Fault.CUT, b"eth_getTransactionReceipt", 2)),
    ("receipt answer truncated", FaultPlan(Fault.TRUNCATE_BODY, b"eth_getTransactionReceipt", 1, after_bytes=30)),
    ("every exchange cut, four times", FaultPlan(Fault.CUT, b"", 4)),
)


@dataclass
class _Ledger:
    """A deployed contract, one run, and the funds acknowledged so far (amount → tx hash)."""

    node: AnvilNode
    direct: TrainingRunClient  # straight to Anvil: the ground truth
    run_id: int
    acknowledged: dict[int, str]

    @classmethod
    def start(cls, workdir: Path) -> _Ledger:
        node = AnvilNode(log_path=workdir / "anvil.log").start()
        web3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 10}))
        sponsor = Account.from_key(node.private_keys[0])
        deployment = deploy(web3, sponsor)
        direct = TrainingRunClient(web3, deployment.address, sponsor, deployment.block)
        run_id = direct.create_run(PARAMS)
        return cls(node, direct, run_id, {})

    def funder(self, rpc_url: str) -> TrainingRunClient:
        web3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
        return TrainingRunClient(web3, self.direct.contract.address, Account.from_key(self.node.private_keys[1]),
                                 self.direct.from_block)

    def fund(self, client: TrainingRunClient, amount: int) -> str:
        """One fund tx; '' when it was acknowledged, else the clear error it ended with."""
        function = client.contract.functions.fund(self.run_id)
        params = client._params(function, amount)
        try:
            receipt = send_transaction(client.web3, client.account, params, "fund", client.decoder, POLICY)
        except ChainError as err:
            return f"{type(err).__name__}: {err}"[:300]
        self.acknowledged[amount] = "0x" + bytes(receipt["transactionHash"]).hex()
        return ""

    def audit(self) -> tuple[int, int, str]:
        """(lost, double_applied, detail) from the chain's own logs."""
        web3 = self.direct.web3
        logs = self.direct.contract.events.RunFunded().get_logs(
            argument_filters={"runId": self.run_id}, from_block=self.direct.from_block, to_block="latest")
        by_nonce: Counter[tuple[str, int]] = Counter()
        amounts: Counter[int] = Counter()
        for log in logs:
            tx = web3.eth.get_transaction(log["transactionHash"])
            by_nonce[(str(tx["from"]), int(tx["nonce"]))] += 1
            amounts[int(log["args"]["amount"])] += 1
        double = sum(n - 1 for n in by_nonce.values() if n > 1) + sum(n - 1 for n in amounts.values() if n > 1)
        lost = sum(1 for amount in self.acknowledged if amounts[amount] == 0)
        pool = self.direct.get_run(self.run_id).pool
        if pool != sum(amounts.elements()):
            lost += 1
        return lost, double, f"{len(logs)} RunFunded logs, {len(self.acknowledged)} acknowledged, pool {pool}"

    def stop(self) -> None:
        self.node.stop()
        NONCES.reset()


def _delta(ledger: _Ledger, before: tuple[int, int]) -> tuple[int, int, str]:
    lost, double, detail = ledger.audit()
    return lost - before[0], double - before[1], detail


def chain_rpc_drop(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Each fault: arm one RPC fault on the proxy between web3 and Anvil, send one fund tx through it."""
    ledger = _Ledger.start(workdir)
    outcomes: list[FaultOutcome] = []
    try:
        with FaultProxy(ledger.node.port) as proxy:
            client = ledger.funder(proxy.url)
            for i in range(faults):
                name, plan = RPC_FAULTS[i % len(RPC_FAULTS)] if i < len(RPC_FAULTS) else rng.choice(RPC_FAULTS)
                before = ledger.audit()[:2]
                proxy.plan(plan)
                applied = proxy.faults_applied
                error = ledger.fund(client, amount=1000 + i)
                proxy.clear()
                lost, double, detail = _delta(ledger, before)
                hit = proxy.faults_applied - applied
                outcomes.append(FaultOutcome(
                    "chain_rpc_drop", name, recovered=not error and hit > 0, lost=lost, double_applied=double,
                    detail=f"{error or 'acknowledged'}; fault hit {hit}x; {detail}"))
    finally:
        ledger.stop()
    return outcomes


def anvil_restart_from_state(faults: int, rng: random.Random, workdir: Path) -> list[FaultOutcome]:
    """Each fault: a fund tx waits in the mempool (automine off) while Anvil is killed and restarted on the same
    port from a state dump. Half the time the tx was mined before the dump (the restarted chain has it), half
    the time not (the mempool is gone): the sender's resend of the same signed bytes must land exactly once."""
    ledger = _Ledger.start(workdir)
    state = workdir / "anvil-state.json"
    outcomes: list[FaultOutcome] = []
    try:
        client = ledger.funder(ledger.node.rpc_url)
        for i in range(faults):
            mined_before_dump = i % 2 == 0 if i < 2 else rng.random() < 0.5
            before = ledger.audit()[:2]
            ledger.node.set_automine(False)
            errors: list[str] = []
            worker = threading.Thread(
                target=lambda out=errors, amount=1000 + i: out.append(ledger.fund(client, amount)))
            worker.start()
            pending = _wait_pending(ledger.node)
            if mined_before_dump:
                ledger.node.mine(1)
            ledger.node.dump_state(state)
            ledger.node.restart_from_state(state)  # a fresh Anvil mines at once again (automine)
            worker.join(timeout=60)
            error = "worker hung" if worker.is_alive() else errors[0]
            lost, double, detail = _delta(ledger, before)
            fault = "restart from a state with the tx mined" if mined_before_dump else "restart lost the mempool"
            outcomes.append(FaultOutcome(
                "anvil_restart_from_state", fault, recovered=not error and pending, lost=lost,
                double_applied=double, detail=f"{error or 'acknowledged'}; {detail}"))
    finally:
        ledger.stop()
    return outcomes


def _wait_pending(node: AnvilNode, timeout_s: float = 10.0) -> bool:
    """Until one transaction waits in Anvil's mempool (the sender is between its send and its receipt)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if int(node.rpc("txpool_status")["pending"], 16) > 0:
            return True
        time.sleep(0.01)
    return False


SCENARIOS: dict[str, ScenarioFn] = {
    "chain_rpc_drop": chain_rpc_drop,
    "anvil_restart_from_state": anvil_restart_from_state,
}
