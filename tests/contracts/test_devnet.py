"""`trainmarket devnet` end to end: starts Anvil, deploys, creates a funded run, writes files, stops; its flags
shape the run and the clock; an underfunded sponsor is refused first; `--hold` restarts a dead IPFS daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from base.paths import REPO_ROOT
from base.process import port_open
from base.run_config import RunConfig
from base.units import ETH
from contracts.anvil import AnvilNode
from contracts.deploy import Deployment
from contracts.tx import NONCES
from ipfs.client import IpfsClient
from trainmarket.cli import main
from trainmarket.devnet import DevnetSettings, start_devnet


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


def test_devnet_flags_shape_the_run_and_the_chain_ticks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ipfs_client: IpfsClient
) -> None:
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path))
    settings = DevnetSettings(window_blocks=7, reveal_blocks=3, windows_per_epoch=4, pool_wei=12 * ETH,
                              reward_per_epoch_wei=ETH // 2, min_trainer_stake_wei=ETH // 4,
                              min_validator_stake_wei=3 * ETH, block_time=1)
    devnet = start_devnet(settings, ipfs_api=ipfs_client.api_url)
    try:
        run = devnet.client().get_run(devnet.run_id)
        assert (run.window_blocks, run.reveal_blocks, run.windows_per_epoch) == (7, 3, 4)
        assert (run.pool, run.reward_per_epoch) == (12 * ETH, ETH // 2)
        assert (run.min_trainer_stake, run.min_validator_stake) == (ETH // 4, 3 * ETH)
        # A trainer cannot leave with its stake before the epoch it trained in is settled (and slashed).
        assert run.unbonding_blocks > run.windows_per_epoch * run.window_blocks + run.reveal_blocks + \
            run.grace_period_blocks
        # Interval mining: the chain moves with no transaction sent, so `node run` never waits on a still chain.
        assert devnet.node is not None
        before = devnet.node.block_number()
        deadline = time.monotonic() + 30  # bounds a broken test only
        while devnet.node.block_number() < before + 2:
            assert time.monotonic() < deadline, "the devnet's chain does not advance on its own"
            time.sleep(0.2)
    finally:
        devnet.stop()


def test_underfunded_sponsor_is_refused_before_anything_is_spent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], ipfs_client: IpfsClient
) -> None:
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path))
    with AnvilNode() as chain:
        sponsor = Account.from_key(chain.private_keys[5])
        chain.set_balance(sponsor.address, 5 * ETH)
        monkeypatch.setenv("TRAINMARKET_PRIVATE_KEY", chain.private_keys[5])
        code = main(["devnet", "--rpc-url", chain.rpc_url, "--ipfs-api", ipfs_client.api_url,
                     "--deployment", str(tmp_path / "deployment.json")])
        err = capsys.readouterr().err
        web3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        assert web3.eth.get_transaction_count(sponsor.address) == 0  # no deployment, no createRun
        assert web3.eth.get_balance(sponsor.address) == 5 * ETH
    NONCES.reset()
    assert code == 2 and "Traceback" not in err
    assert f"sponsor {sponsor.address} has 5 ETH" in err and "reward pool of 1000 ETH" in err
    assert f"ETH more to {sponsor.address}" in err and "--pool" in err
    assert not (tmp_path / "deployment.json").exists()


def _daemon_pids(repo: Path) -> list[int]:
    """Processes whose IPFS_PATH is `repo` (this test's own folder, so never another run's daemon)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"IPFS_PATH={repo}".encode() in environ:
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_devnet_hold_restarts_a_dead_ipfs_daemon(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRAINMARKET_IPFS_API"}
    env["TRAINMARKET_HOME"] = str(tmp_path)
    log = tmp_path / "devnet.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trainmarket.cli", "devnet", "--hold"], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: "Ctrl-C" in log.read_text(), proc, log)
        summary = json.loads((tmp_path / "devnet" / "devnet.json").read_text())
        repo = tmp_path / "devnet" / "ipfs"
        pids = _daemon_pids(repo)
        assert pids, "no IPFS daemon runs with the devnet's repo"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        _wait(lambda: "IPFS is back" in log.read_text(), proc, log)
        with IpfsClient(summary["ipfs_api"], retries=1) as blobs:  # same URL, and the run's config is still there
            RunConfig.from_json_bytes(blobs.cat(summary["config_cid"], 1 << 20))
        assert "died; restarting it" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not _daemon_pids(repo)


def _wait(done: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout  # bounds a broken test only
    while not done():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
