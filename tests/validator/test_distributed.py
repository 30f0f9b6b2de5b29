"""A validator's scoring spread over 2 gloo processes gives exactly the floats, the report and the model of one
process.

The first test forms a real process group with torch.multiprocessing (rank 0 evaluates a window through
validator/distributed.py and scores two whole windows through a strategy that uses it, rank 1 follows) and
compares every per-row loss with `evaluate_rows` in one process, and each report (aggregation bar, marginal-value
valuation, pay) and model byte for byte with a single-process strategy.
The last runs `torchrun --nproc-per-node 2 -m trainmarket.cli validator run` against a real Anvil and IPFS daemon
beside a single-process validator of the same run: both publish the same model and report CIDs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from base.commitments import report_commitment
from base.paths import REPO_ROOT
from base.process import free_port
from contracts.tx import NONCES
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from tests.validator.distributed_worker import CONTRIBUTIONS, model, rank_main, rows_json, score_two_windows, window
from tests.validator.loop_harness import play_window, publish_initial_model, start_net
from validator.distributed import pack_delta, rank_slice, unpack_delta
from validator.evaluate import evaluate_rows
from validator.loop import configure_determinism


def test_rank_slices_cover_the_contributions_in_order() -> None:
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            slices = [rank_slice(n, r, world) for r in range(world)]
            assert [i for s in slices for i in s] == list(range(n))
            assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_packed_deltas_are_bit_exact() -> None:
    delta = {"w": torch.tensor([[0.0, -0.0, 1.5], [float("1e-40"), 0.0, -2.0]]), "b": torch.zeros(3)}
    back = unpack_delta(pack_delta(delta))
    for name, tensor in delta.items():
        assert back[name].shape == tensor.shape
        assert torch.equal(back[name].view(torch.int32), tensor.view(torch.int32)), name  # −0.0 and denormals too


def test_two_gloo_processes_evaluate_and_score_exactly_like_one(tmp_path: Path) -> None:
    # fork: the ranks inherit the imported torch instead of importing it again (seconds each on 2 cores)
    mp.start_processes(rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    assert (tmp_path / "follower").read_text() == "4"  # rank 1 took its share of all 4 jobs, then was told to stop
    configure_determinism()
    base, deltas, own, random_batch = window()
    single = rows_json(evaluate_rows(model(), deltas, own, random_batch, 1.0, "cpu", base=base))
    assert len(single) == CONTRIBUTIONS
    for run in json.loads((tmp_path / "results.json").read_text()):
        assert run == single  # every per-row float equal, not close
    spread = json.loads((tmp_path / "windows.json").read_text())
    one = score_two_windows(None)
    assert [json.loads(w["report"])["valuation"] for w in one][1]  # the valuation step ran and is in the report
    assert spread == one  # reports (scores, value, pay, accepted) and the models' bits identical


# -- the real CLI under torchrun, against a real chain and IPFS --------------------------------------------


@pytest.mark.slow
def test_torchrun_validator_publishes_the_single_process_cids(tmp_path: Path, ipfs_daemon: IpfsDaemon) -> None:
    configure_determinism()
    with IpfsClient(ipfs_daemon.api_url, timeout=10.0) as blobs:
        net = start_net(tmp_path, blobs, n_trainers=5, n_validators=2)
        try:
            base_cid, base = publish_initial_model(net)
            play_window(net, 0, base_cid, base)
            single = net.loop(net.validators[0], tmp_path / "single")
            assert single.step()  # window 0 scored and published by one process
            deployment = tmp_path / "deployment.json"
            deployment.write_text(json.dumps({
                "address": net.sponsor.contract.address, "block": net.sponsor.from_block,
                "rpc_url": net.node.rpc_url, "run_id": net.run_id, "config_cid": net.config_cid,
                "ipfs_api": ipfs_daemon.api_url}))
            spread = net.validators[1]
            env = {**os.environ, "TRAINMARKET_VALIDATOR_KEY": spread.account.key.hex(),
                   "TRAINMARKET_HOME": str(tmp_path / "state"), "OMP_NUM_THREADS": "1"}
            torchrun = Path(sys.executable).with_name("torchrun")
            argv = [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                    str(free_port()), "-m", "trainmarket.cli", "validator", "run", "--deployment", str(deployment),
                    "--home", str(tmp_path / "spread"), "--device", "cpu", "--poll-seconds", "0.2"]
            proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            try:
                deadline = time.monotonic() + 240  # bounds a broken test only; the chain is the clock
                while spread.address_of_account not in net.sponsor.publications(net.run_id, 0):
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                    assert time.monotonic() < deadline, "the torchrun validator never published"
                    time.sleep(0.5)
                proc.terminate()  # torchrun stops both ranks
                out, _ = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            pubs = net.sponsor.publications(net.run_id, 0)
            one, two = pubs[net.validators[0].address_of_account], pubs[spread.address_of_account]
            assert two.model_cid == one.model_cid, out
            # Reports are sealed (bound to each publisher): the same report CID behind both commitments.
            stored = single.store.window_report(0)
            assert stored is not None and two.report_commitment == report_commitment(
                stored["report_cid"], spread.address_of_account), out
            assert "evaluated 5 contributions over 2 processes (gloo)" in out, out
        finally:
            net.node.stop()
            NONCES.reset()
