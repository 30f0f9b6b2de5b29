"""`trainmarket devnet` end to end: starts Anvil, deploys, creates a funded run, writes files, stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.deploy import Deployment
from trainmarket.cli import main
from trainmarket.process import port_open


def test_devnet_command_deploys_a_funded_run_and_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path))
    assert main(["devnet"]) == 0
    deployment = Deployment.load(tmp_path / "devnet" / "deployment.json")
    summary = json.loads((tmp_path / "devnet" / "devnet.json").read_text())
    assert summary["contract"] == deployment.address and summary["run_id"] == 0
    assert summary["params"]["window_blocks"] > 0 and len(summary["accounts"]) == 10
    assert deployment.address in capsys.readouterr().out
    port = int(summary["rpc_url"].rsplit(":", 1)[1])
    assert not port_open(port)  # the chain was stopped
