"""Chain faults on a real Anvil through the real fault proxy: a transaction whose response is lost, whose
request is dropped or whose receipt lookups fail is re-sent with the same signed bytes and mined exactly once;
Anvil killed and restarted from a state dump keeps what was mined and gets back what its mempool lost."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from bench.faults.chain import RPC_FAULTS, _Ledger, anvil_restart_from_state
from bench.faults.proxy import Fault, FaultPlan, FaultProxy
from contracts.tx import nonce_of

pytestmark = pytest.mark.slow


def test_every_rpc_fault_is_survived_and_applied_once(tmp_path: Path) -> None:
    ledger = _Ledger.start(tmp_path)
    try:
        with FaultProxy(ledger.node.port) as proxy:
            client = ledger.funder(proxy.url)
            for i, (name, plan) in enumerate(RPC_FAULTS):
                proxy.plan(plan)
                applied = proxy.faults_applied
                assert ledger.fund(client, 100 + i) == "", name
                assert proxy.faults_applied > applied, f"{name}: the fault never fired"
            proxy.clear()
            lost, double, detail = ledger.audit()
            assert (lost, double) == (0, 0), detail
            assert ledger.direct.get_run(ledger.run_id).pool == sum(100 + i for i in range(len(RPC_FAULTS)))
            # Signed, never sent: resends are matched by the nonce inside the bytes.
            first = client.signed(client.contract.functions.fund(ledger.run_id), "fund", 1)
            second = client.signed(client.contract.functions.fund(ledger.run_id), "fund", 1)
            assert nonce_of(second) == nonce_of(first) + 1
    finally:
        ledger.stop()


def test_a_dead_rpc_is_a_clear_error_and_the_audit_sees_double_funds(tmp_path: Path) -> None:
    ledger = _Ledger.start(tmp_path)
    try:
        with FaultProxy(ledger.node.port) as proxy:
            client = ledger.funder(proxy.url)
            proxy.plan(FaultPlan(Fault.DROP_REQUEST))  # nothing ever gets through
            began = time.monotonic()
            error = ledger.fund(client, 7)
            assert error.startswith("ChainUnreachable"), error
            # The policy `fund` passes bounds signing (nonce, estimate) too: under the default's eight retries with
            # backoff the same ChainUnreachable came after ~20 s, under POLICY's six (≤ 0.5 s apart, each dropped
            # request costing RPC_TIMEOUT_S) within ~10 s.
            assert time.monotonic() - began < 15.0
            proxy.clear()
            # The oracle is not blind: the same amount funded twice (two nonces) is counted.
            assert ledger.fund(client, 5) == "" and ledger.fund(client, 5) == ""
        lost, double, _ = ledger.audit()
        assert (lost, double) == (0, 1)
    finally:
        ledger.stop()


def test_anvil_restarts_from_state_without_loss_or_double(tmp_path: Path) -> None:
    outcomes = anvil_restart_from_state(2, random.Random(1), tmp_path)
    assert {o.fault for o in outcomes} == {"restart from a state with the tx mined", "restart lost the mempool"}
    assert all(o.recovered for o in outcomes), [o.detail for o in outcomes]
    assert sum(o.lost + o.double_applied for o in outcomes) == 0
