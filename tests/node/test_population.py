"""Several trainer identities in one process (node/population.py) on a real Anvil and a real IPFS daemon: each
commits and reveals its own payload with its own key, as separate nodes would, through the shared per-block
reads. Blocks are mined explicitly; the waits below only bound a broken test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.anvil import AnvilNode
from contracts.tx import NONCES
from contracts.types import CommitStatus
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.population import population_account
from node.population_host import Population, load_identities
from node.session import NodeTarget
from tensors.payload import decode_contribution
from tests.node.test_runner_integration import ETH, DevRun, start_dev_run

IDENTITIES = 4


@pytest.fixture(scope="module")
def devrun(ipfs_daemon: IpfsDaemon) -> Iterator[DevRun]:
    with AnvilNode() as node, IpfsClient(ipfs_daemon.api_url) as blobs:
        yield start_dev_run(node, blobs, ipfs_daemon.api_url)
    NONCES.reset()


def wait_for(condition: object, what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_each_identity_commits_and_reveals_its_own_payload(devrun: DevRun, tmp_path: Path) -> None:
    accounts = [population_account("test", i) for i in range(IDENTITIES)]
    for account in accounts:
        devrun.node.set_balance(account.address, 10 * ETH)
        devrun.sponsor.with_account(account).register_trainer(devrun.run_id, ETH)
    target = NodeTarget(devrun.node.rpc_url, devrun.deployment.address, devrun.deployment.block, devrun.run_id,
                        devrun.config_cid, devrun.api_url)
    nodes, shared, _ = load_identities(target, tmp_path, tmp_path / "cache", "test", range(IDENTITIES))
    assert [n.trainer for n in nodes] == [a.address for a in accounts]
    clock = devrun.clock()
    window = clock.window_of(devrun.node.block_number() + 1) + 1
    devrun.mine_to(clock.start(window))
    population = Population(nodes, shared, devrun.run_id, workers=IDENTITIES)
    stop = threading.Event()
    runner = threading.Thread(target=population.run, args=(stop, window), daemon=True)
    runner.start()
    try:
        wait_for(lambda: all((e := n.journal.get(window)) is not None and e.committed for n in nodes),
                 "not every identity committed")
        for account in accounts:
            _, status = devrun.sponsor.commitment_of(devrun.run_id, window, account.address)
            assert status == CommitStatus.COMMITTED
        devrun.mine_to(clock.end(window))  # the reveal period opens
        runner.join(timeout=120)
        assert not runner.is_alive(), "the population did not finish after its last reveal"
    finally:
        stop.set()
    assert not population.failed
    reveals = {r.trainer: r.cid for r in devrun.sponsor.reveals(devrun.run_id, window)}
    assert set(reveals) == {a.address for a in accounts}
    assert len(set(reveals.values())) == IDENTITIES  # each trained on its own data: four different payloads
    with IpfsClient(devrun.api_url) as blobs:
        for trainer, cid in reveals.items():
            decoded = decode_contribution(blobs.cat(cid, devrun.config.max_payload_bytes), nodes[0].spec,
                                          devrun.config.max_payload_bytes)
            assert decoded.manifest.trainer.lower() == trainer.lower() and decoded.manifest.window == window
    assert shared.batches >= 1  # the identities' commitment reads went out batched
    lines = [json.loads(line) for line in (tmp_path / "sync.jsonl").read_text().splitlines()]
    assert sorted(r["trainer"] for r in lines if r.get("window") == window) == sorted(
        a.address.lower() for a in accounts)
    for node in nodes:
        entry = node.journal.get(window)
        assert entry is not None and entry.revealed and not entry.missed
        node.close()
