"""`trainmarket devnet` end to end: starts Anvil, deploys, creates a funded run, writes files, stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.deploy import Deployment
from ipfs.client import IpfsClient
from node.protocol import RunConfig
from trainmarket.cli import main
from trainmarket.process import port_open


def test_devnet_command_deploys_a_funded_run_and_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], ipfs_client: IpfsClient
) -> None:
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path))
    monkeypatch.setenv("TRAINMARKET_IPFS_API", ipfs_client.api_url)
    assert main(["devnet"]) == 0
    deployment = Deployment.load(tmp_path / "devnet" / "deployment.json")
    summary = json.loads((tmp_path / "devnet" / "devnet.json").read_text())
    assert summary["contract"] == deployment.address and summary["run_id"] == 0
    # The node and validator CLIs join from this file: it names the run and a config whose digest is on chain.
    raw = json.loads((tmp_path / "devnet" / "deployment.json").read_text())
    assert raw["run_id"] == 0 and raw["config_cid"] == summary["config_cid"]
    config = RunConfig.from_json_bytes(ipfs_client.cat(raw["config_cid"], 1 << 20))
    assert config.digest().hex() == summary["params"]["config_digest"]
    assert config.dataset_cid and config.initial_model_cid
    assert summary["params"]["window_blocks"] > 0 and len(summary["accounts"]) == 10
    assert deployment.address in capsys.readouterr().out
    port = int(summary["rpc_url"].rsplit(":", 1)[1])
    assert not port_open(port)  # the chain was stopped
