"""One trainer through commit and reveal on a real Anvil and a real IPFS daemon, and the resume logic: the
node is SIGKILLed between commit and reveal (a real subprocess running `trainmarket node run`), restarted,
and the reveal still lands on chain. Blocks are mined explicitly; nothing waits on wall time as a clock."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from eth_account import Account
from web3 import Web3

from base.clock import WindowClock
from base.model import build_model, model_spec
from base.paths import REPO_ROOT
from base.run_config import RunConfig
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import Deployment, deploy
from contracts.tx import NONCES
from contracts.types import CommitStatus, RunParams
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.data import build_dataset, fetch_dataset, publish_dataset
from node.journal import TrainerJournal
from node.keys import PRIVATE_KEY_ENV
from node.payloads import RunPayloads
from node.runner import NodeSetup, TrainerNode
from tensors.payload import decode_contribution

ETH = 10**18


@dataclass
class DevRun:
    """A chain with one run whose config (and dataset, initial model) live on the IPFS daemon."""

    node: AnvilNode
    web3: Web3
    deployment: Deployment
    sponsor: TrainingRunClient
    run_id: int
    config: RunConfig
    config_cid: str
    api_url: str
    keys: list[str]

    def client(self, key_index: int) -> TrainingRunClient:
        return self.sponsor.with_account(Account.from_key(self.keys[key_index]))

    def clock(self) -> WindowClock:
        return WindowClock.of(self.sponsor.get_run(self.run_id))

    def mine_to(self, block: int) -> None:
        """Mine so that the next transaction lands in `block`."""
        missing = block - 1 - self.node.block_number()
        assert missing >= 0, f"already past block {block}"
        self.node.mine(missing)

    def write_deployment(self, path: Path) -> Path:
        body = {"address": self.deployment.address, "block": self.deployment.block, "rpc_url": self.node.rpc_url,
                "run_id": self.run_id, "config_cid": self.config_cid, "ipfs_api": self.api_url}
        path.write_text(json.dumps(body))
        return path


def tiny_config(**changes: object) -> RunConfig:
    return RunConfig(model_preset="tiny", seq_len=32, inner_steps=2, seqs_per_step=2, **changes)  # type: ignore[arg-type]


def run_params(config: RunConfig) -> RunParams:
    return RunParams(
        config_digest=config.digest(), window_blocks=10, reveal_blocks=5, windows_per_epoch=2,
        grace_period_blocks=8, unbonding_blocks=41, validator_share_bps=2000, slash_bps=1000, miss_threshold=2,
        min_trainer_stake=ETH, min_validator_stake=2 * ETH, reward_per_epoch=10 * ETH,
    )


def start_dev_run(node: AnvilNode, blobs: IpfsClient, api_url: str) -> DevRun:
    """Deploy, publish dataset + initial model + config (as a sponsor would), create the run."""
    web3 = Web3(Web3.HTTPProvider(node.rpc_url))
    sponsor_account = Account.from_key(node.private_keys[0])
    deployment = deploy(web3, sponsor_account)
    sponsor = TrainingRunClient(web3, deployment.address, sponsor_account, deployment.block)
    texts = [(p.name, p.read_bytes()) for p in sorted((REPO_ROOT / "node").glob("*.py"))]
    dataset_cid = publish_dataset(blobs, build_dataset(texts, shard_bytes=16 * 1024, heldout_fraction=0.2))
    draft = tiny_config(dataset_cid=dataset_cid)
    run_id = sponsor.run_count()
    model = build_model(draft)
    params = {name: p.detach() for name, p in model.named_parameters()}
    initial = blobs.add(RunPayloads(draft, run_id, model_spec(model)).encode_initial_model(params))
    config = draft.model_copy(update={"initial_model_cid": initial})
    config_cid = blobs.add(config.to_json_bytes())
    assert sponsor.create_run(run_params(config), 100 * ETH) == run_id
    return DevRun(node, web3, deployment, sponsor, run_id, config, config_cid, api_url, node.private_keys)


@pytest.fixture(scope="module")
def devrun(ipfs_daemon: IpfsDaemon) -> Iterator[DevRun]:
    with AnvilNode() as node, IpfsClient(ipfs_daemon.api_url) as blobs:
        yield start_dev_run(node, blobs, ipfs_daemon.api_url)
    NONCES.reset()


def node_setup(devrun: DevRun, key_index: int, home: Path, blobs: IpfsClient) -> NodeSetup:
    client = devrun.client(key_index)
    dataset = fetch_dataset(blobs, devrun.config.dataset_cid, home / "datasets")
    return NodeSetup(client, devrun.run_id, devrun.config, blobs, dataset, home, torch.device("cpu"))


def test_one_trainer_commits_then_reveals(devrun: DevRun, tmp_path: Path) -> None:
    trainer = devrun.client(4)
    trainer.register_trainer(devrun.run_id, ETH)
    clock = devrun.clock()
    window = clock.window_of(devrun.node.block_number() + 1) + 1
    devrun.mine_to(clock.start(window))
    with IpfsClient(devrun.api_url) as blobs:
        node = TrainerNode(node_setup(devrun, 4, tmp_path, blobs))
        assert node.step() == (True, True)
        _, status = trainer.commitment_of(devrun.run_id, window, trainer.address_of_account)
        assert status == CommitStatus.COMMITTED
        entry = node.journal.get(window)
        assert entry is not None and entry.committed and entry.commit_tx and not entry.revealed
        assert entry.base_model_cid == devrun.config.initial_model_cid
        assert node.step() == (False, False)  # committed, reveal period not open, nothing new to train

        devrun.mine_to(clock.end(window))
        assert node.step() == (True, False)
        entry = node.journal.get(window)
        assert entry is not None and entry.revealed and entry.reveal_tx
        reveals = trainer.reveals(devrun.run_id, window)
        assert [(r.trainer, r.cid) for r in reveals] == [(trainer.address_of_account, entry.cid)]
        payload = blobs.cat(entry.cid, devrun.config.max_payload_bytes)
        decoded = decode_contribution(payload, node.spec, devrun.config.max_payload_bytes,
                                      expect={"trainer": trainer.address_of_account, "window": window,
                                              "run_id": devrun.run_id, "base_model_cid": entry.base_model_cid})
        assert set(decoded.delta) == set(node.spec)
        assert any(float(d.abs().sum()) > 0 for d in decoded.delta.values())
        node.close()
        # A restarted node resumes the residual and the inner AdamW moments this window left.
        restarted = TrainerNode(node_setup(devrun, 4, tmp_path, blobs))
        assert restarted.carry.window == window
        assert restarted.carry.optimizer.steps == devrun.config.inner_steps
        assert set(restarted.carry.optimizer.exp_avg) == set(node.spec)
        for name, moment in node.carry.optimizer.exp_avg_sq.items():
            assert torch.equal(restarted.carry.optimizer.exp_avg_sq[name], moment)
        assert any(float(r.abs().sum()) > 0 for r in restarted.carry.feedback.residual.values())
        restarted.close()


class Waits:
    """Records the node's sync-phase notices."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []

    def training(self, window: int, steps: int) -> None: ...

    def step(self, window: int, step: int, loss: float) -> None: ...

    def committed(self, entry: object) -> None: ...

    def revealed(self, entry: object) -> None: ...

    def missed(self, entry: object) -> None: ...

    def waiting(self, window: int, block: int, now: int, until: str) -> None:
        if "model of window" in until:  # the sync phase, not the wait for a block
            self.seen.append((window, window - 1 if f"window {window - 1}" in until else -1, block))


def test_trains_from_the_model_of_the_previous_window(devrun: DevRun, tmp_path: Path) -> None:
    """The sync phase: window w waits until the canonical model of w−1 is settled on chain (here: its only
    validator, a majority, published it) and trains from it; with no such model by its deadline it trains from
    the newest canonical one and names that base. A window − 1 that nobody contributed to (the run's first
    window) is not waited for."""
    with IpfsClient(devrun.api_url) as blobs:
        run = start_dev_run(devrun.node, blobs, devrun.api_url)  # its own run: a validator joins it
        validator = run.client(7)
        validator.register_validator(run.run_id, 2 * ETH)
        run.client(6).register_trainer(run.run_id, ETH)
        other = run.client(8)
        other.register_trainer(run.run_id, ETH)
        clock = run.clock()
        per_epoch = run.sponsor.get_run(run.run_id).windows_per_epoch
        # The validator votes (and its publications count towards canonical models) from the next epoch on.
        first = (clock.window_of(run.node.block_number() + 1) // per_epoch + 1) * per_epoch
        run.mine_to(clock.start(first))
        waits = Waits()
        node = TrainerNode(node_setup(run, 6, tmp_path, blobs), observer=waits)  # type: ignore[arg-type]
        assert node.step() == (True, True) and waits.seen == []  # nobody committed in first − 1: no wait
        entry = node.journal.get(first)
        assert entry is not None and entry.base_model_cid == run.config.initial_model_cid

        window = first + 2
        run.mine_to(clock.start(window - 1))
        assert node.step(train=False) == (True, False)  # the reveal of `first`
        other.commit(run.run_id, window - 1, b"\x01" * 32)  # someone contributes to window − 1: its model matters
        run.mine_to(clock.start(window))
        assert node.step() == (False, False)  # the model of window − 1 is not out yet
        assert waits.seen and waits.seen[0][:2] == (window, window - 1)
        latest_start = waits.seen[0][2]
        assert clock.start(window) < latest_start < clock.end(window)

        run.mine_to(clock.reveal_end(window - 1))
        params = {n: p.detach() + 0.01 for n, p in build_model(run.config).named_parameters()}
        model_cid = blobs.add(node.payloads.encode_initial_model(params))  # any model payload will do
        validator.publish_window(run.run_id, window - 1, model_cid, model_cid)
        assert node.step() == (True, True)
        entry = node.journal.get(window)
        assert entry is not None and entry.base_model_cid == model_cid

        # Nobody publishes window `window`: the next window waits until its deadline, then trains from the newest
        # model (of window − 1), one window stale, and says so in its payload.
        run.mine_to(clock.start(window + 1))
        assert node.step() == (True, False)  # the reveal of `window` comes first
        assert node.step() == (False, False)
        run.mine_to(waits.seen[-1][2])
        assert node.step()[1]
        stale = node.journal.get(window + 1)
        assert stale is not None and stale.base_model_cid == model_cid
        node.close()


def _cli_run(devrun: DevRun, deployment: Path, home: Path, key_index: int, until: int) -> subprocess.Popen[str]:
    env = {**os.environ, PRIVATE_KEY_ENV: devrun.keys[key_index], "TRAINMARKET_HOME": str(home / "state")}
    argv = [sys.executable, "-m", "trainmarket.cli", "node", "run", "--deployment", str(deployment),
            "--home", str(home / "journal"), "--until-window", str(until), "--device", "cpu", "--threads", "1"]
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _wait_for_commit(proc: subprocess.Popen[str], journal: TrainerJournal, window: int) -> None:
    """Poll the journal (not a clock: the deadline only bounds a broken test)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = journal.get(window)
        if entry is not None and entry.committed:
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"node exited early with {proc.returncode}: {out}")
        time.sleep(0.1)
    pytest.fail("the node never committed")


def test_killed_between_commit_and_reveal_still_reveals_after_restart(devrun: DevRun, tmp_path: Path) -> None:
    trainer = devrun.client(5)
    trainer.register_trainer(devrun.run_id, ETH)
    clock = devrun.clock()
    window = clock.window_of(devrun.node.block_number() + 1) + 1
    devrun.mine_to(clock.start(window))
    deployment = devrun.write_deployment(tmp_path / "deployment.json")
    first = _cli_run(devrun, deployment, tmp_path, 5, until=window)
    (tmp_path / "journal").mkdir(exist_ok=True)
    journal = TrainerJournal(tmp_path / "journal", devrun.run_id, trainer.address_of_account)
    try:
        _wait_for_commit(first, journal, window)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    committed = journal.get(window)
    assert committed is not None and committed.committed and not committed.revealed
    _, status = trainer.commitment_of(devrun.run_id, window, trainer.address_of_account)
    assert status == CommitStatus.COMMITTED

    devrun.mine_to(clock.end(window))  # the reveal period of `window` is open; window + 1 is not ours to train
    second = _cli_run(devrun, deployment, tmp_path, 5, until=window)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out
    revealed = journal.get(window)
    assert revealed is not None and revealed.revealed and revealed.reveal_tx
    assert revealed.cid == committed.cid and revealed.commit_tx == committed.commit_tx  # not committed again
    assert [r.cid for r in trainer.reveals(devrun.run_id, window)] == [committed.cid]
    assert f"window {window}: loss" in out and committed.cid in out
    assert len(trainer.commits(devrun.run_id, window)) == 1
    journal.close()
