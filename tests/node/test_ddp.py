"""A trainer node under torchrun: two real gloo processes on 127.0.0.1 train the same window as one process.

The first test forms a real process group with torch.multiprocessing (rank 0 leads two windows through
node/ddp.py, rank 1 follows) and compares rank 0's pseudo-gradients with a single process over the same
batches. The second runs `torchrun --nproc-per-node 2 -m trainmarket.cli node run` against a real Anvil and
IPFS daemon and checks that the two ranks publish exactly one contribution."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from base.paths import REPO_ROOT
from base.process import free_port
from contracts.anvil import AnvilNode
from contracts.tx import NONCES
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.journal import TrainerJournal
from node.keys import PRIVATE_KEY_ENV
from node.train import InnerLoopError, train_inner
from tests.node.ddp_worker import INNER, model, rank_main, window_batches
from tests.node.test_runner_integration import ETH, DevRun, start_dev_run


def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    # fork: the ranks inherit the imported torch instead of importing it again (seconds each on 2 cores)
    mp.start_processes(rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    assert (tmp_path / "follower").read_text() == "2"  # rank 1 trained both windows, then was told to stop
    torch.set_num_threads(1)
    single_model = model()
    moments = None
    for window in (0, 1):
        single = train_inner(single_model, window_batches(window), INNER, torch.device("cpu"), optimizer_state=moments)
        moments = single.optimizer
        distributed = load_file(str(tmp_path / f"delta-{window}.safetensors"))
        assert set(distributed) == set(single.pseudo_gradient)
        for name, delta in single.pseudo_gradient.items():
            # AdamW divides by sqrt(v): where a gradient is ~0, summation-order noise moves a few coordinates
            # by up to ~1e-3 of the largest update; a wrong share or a missing all-reduce moves them all.
            scale = float(delta.abs().max())
            assert scale > 0
            torch.testing.assert_close(distributed[name], delta, rtol=0, atol=2e-3 * scale, msg=name)
            assert float((distributed[name] - delta).norm()) <= 1e-3 * float(delta.norm()), name
        losses = load_file(str(tmp_path / f"losses-{window}.safetensors"))["losses"]
        torch.testing.assert_close(losses, torch.tensor(single.losses), rtol=1e-5, atol=1e-6)


def test_uneven_shares_are_refused() -> None:
    class Three:  # a cluster of 3 processes, as train_inner sees it (the check happens before any collective)
        world_size, rank = 3, 0

    with pytest.raises(InnerLoopError, match="do not split evenly over 3"):
        train_inner(model(), window_batches(0), INNER, torch.device("cpu"), cluster=Three())  # type: ignore[arg-type]


# -- the real CLI under torchrun, against a real chain and IPFS --------------------------------------------


@pytest.fixture(scope="module")
def devrun(ipfs_daemon: IpfsDaemon) -> Iterator[DevRun]:
    with AnvilNode() as node, IpfsClient(ipfs_daemon.api_url) as blobs:
        yield start_dev_run(node, blobs, ipfs_daemon.api_url)
    NONCES.reset()


@pytest.mark.slow
def test_torchrun_node_publishes_one_contribution(devrun: DevRun, tmp_path: Path) -> None:
    key_index = 6
    trainer = devrun.client(key_index)
    trainer.register_trainer(devrun.run_id, ETH)
    clock = devrun.clock()
    window = clock.window_of(devrun.node.block_number() + 1) + 1
    devrun.mine_to(clock.start(window))
    deployment = devrun.write_deployment(tmp_path / "deployment.json")
    env = {**os.environ, PRIVATE_KEY_ENV: devrun.keys[key_index], "TRAINMARKET_HOME": str(tmp_path / "state"),
           "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    argv = [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "trainmarket.cli", "node", "run", "--deployment", str(deployment), "--home", str(tmp_path / "j"),
            "--until-window", str(window), "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        (tmp_path / "j").mkdir(exist_ok=True)
        journal = TrainerJournal(tmp_path / "j", devrun.run_id, trainer.address_of_account)
        deadline = time.monotonic() + 150  # bounds a broken test only; the chain is the clock
        while not ((entry := journal.get(window)) is not None and entry.committed):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the torchrun node never committed"
            time.sleep(0.2)
        devrun.mine_to(clock.end(window))  # the reveal period opens
        out, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    said = " ".join(out.split())  # rich wraps long lines
    assert "× 2 processes (gloo)" in said and "rank 1/2 (gloo): 1 window(s) trained" in said
    assert len(trainer.commits(devrun.run_id, window)) == 1
    entry = journal.get(window)
    assert entry is not None and entry.revealed
    assert [(r.trainer, r.cid) for r in trainer.reveals(devrun.run_id, window)] == [
        (trainer.address_of_account, entry.cid)]
    journal.close()
