"""Audit on a real Anvil and a real IPFS daemon: an honest validator's window passes, a report with one
edited number (published on chain by a second validator) is caught, through the library and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from base.report import WindowReport
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from tests.validator.loop_harness import Net, play_window, publish_initial_model, reveal_reports, start_net
from trainmarket.cli import main
from validator.audit import audit_window, render
from validator.loop import configure_determinism


@dataclass
class Audited:
    net: Net
    api_url: str
    honest: str  # validator addresses
    tamperer: str
    edited_trainer: str
    deployment: Path


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, ipfs_daemon: IpfsDaemon) -> Iterator[Audited]:
    configure_determinism()
    tmp = tmp_path_factory.mktemp("audit")
    with IpfsClient(ipfs_daemon.api_url) as blobs:
        net = start_net(tmp, blobs, n_trainers=4, n_validators=2)
        try:
            base_cid, base = publish_initial_model(net)
            play_window(net, 0, base_cid, base, garbage=3)
            honest, tamperer = net.validators[0], net.validators[1]
            loop = net.loop(honest, tmp / "honest")
            assert loop.step()
            pub = net.sponsor.publications(net.run_id, 0)[honest.address_of_account]
            report = WindowReport.from_json(loop.report_bytes(0))  # sealed on chain: read from its own store
            victim = report.scores[0]
            edited = replace(report, scores=(replace(victim, s_i=victim.s_i + 0.01), *report.scores[1:]))
            tampered_cid = blobs.add(edited.to_json().encode())
            tamperer.publish_window(net.run_id, 0, pub.model_cid, tampered_cid)
            # Window 1 trains from window 0's model: auditing it replays state (ratings, momentum) across windows.
            _, model0 = loop.load_state(0)
            play_window(net, 1, pub.model_cid, model0)
            for _ in range(3):  # a due epoch is settled before the next window is scored
                assert loop.step()
                if honest.address_of_account in net.sponsor.publications(net.run_id, 1):
                    break
            for epoch in (0, 1):  # windows per epoch: 1
                reveal_reports(net, loop, epoch)
            tamperer.reveal_reports(net.run_id, 0, [tampered_cid])  # epoch 0 is settled: no longer sealed
            loop.store.close()
            deployment = tmp / "deployment.json"
            deployment.write_text(json.dumps({
                "address": net.sponsor.contract.address, "block": net.sponsor.from_block,
                "rpc_url": net.node.rpc_url, "config_cid": net.config_cid, "run_id": net.run_id,
            }))
            yield Audited(net, ipfs_daemon.api_url, honest.address_of_account, tamperer.address_of_account,
                          victim.trainer, deployment)
        finally:
            net.node.stop()


def test_honest_window_passes(audited: Audited) -> None:
    net = audited.net
    result = audit_window(net.ctx(net.sponsor), 0, audited.honest)
    assert result.ok, render(result, only_mismatches=True)
    paths = {c.path for c in result.checks}
    assert f"scores.{audited.edited_trainer}.s_i" in paths and "aggregate.update_norm" in paths
    assert len(result.checks) > 50


def test_a_later_window_passes_through_the_replayed_state(audited: Audited) -> None:
    net = audited.net
    result = audit_window(net.ctx(net.sponsor), 1, audited.honest)
    assert result.ok, render(result, only_mismatches=True)
    assert result.replayed_from == 0
    assert any(c.path == "model_cid[window 0]" for c in result.checks)
    # Skipping window 0 still scores against the right model (the canonical model of window 0, read from the
    # chain, as a late-joining validator would) but from a fresh state (ratings): the state's numbers disagree.
    fresh = audit_window(net.ctx(net.sponsor), 1, audited.honest, from_window=1)
    assert not fresh.ok
    mismatched = {c.path for c in fresh.mismatches}
    assert f"scores.{audited.edited_trainer}.mu" in mismatched and "inputs.base_model_cid" not in mismatched


def test_tampered_score_is_detected(audited: Audited) -> None:
    net = audited.net
    result = audit_window(net.ctx(net.sponsor), 0, audited.tamperer)
    assert not result.ok
    assert [c.path for c in result.mismatches] == [f"scores.{audited.edited_trainer}.s_i"]
    bad = result.mismatches[0]
    assert isinstance(bad.published, float) and isinstance(bad.recomputed, float)
    assert abs(bad.published - bad.recomputed - 0.01) < 1e-9


def test_cli_audit_exit_codes(audited: Audited, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path))
    common = ["validator", "audit", "--deployment", str(audited.deployment), "--ipfs-api", audited.api_url,
              "--window", "0"]
    assert main([*common, "--validator", audited.honest]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main([*common, "--validator", audited.tamperer, "--mismatches-only"]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH scores.{audited.edited_trainer}.s_i" in out and "FAIL (1 mismatches)" in out
    # Two validators published window 0: the auditor must say whose report it checks.
    assert main(common) == 2
    assert "pick one with --validator" in capsys.readouterr().err

