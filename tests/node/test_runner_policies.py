"""The loop's other paths on a real chain and IPFS: a policy that withholds its reveal or sends nothing, a
commit that comes too late, a lost journal (the chain's commit record still stops a second commit), and
the unstake command's two steps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import Tensor

from base.units import ETH
from contracts.anvil import AnvilNode
from contracts.tx import NONCES
from contracts.types import CommitStatus
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.policy import TrainingContext, UpdatePolicy
from node.runner import TrainerNode
from tests.node.test_runner_integration import DevRun, node_setup, start_dev_run
from trainmarket.cli import main


class Withholder(UpdatePolicy):
    name = "withholder"

    def should_reveal(self, window: int) -> bool:
        return False


class Abstainer(UpdatePolicy):
    name = "abstainer"

    def make_delta(self, ctx: TrainingContext) -> dict[str, Tensor] | None:
        return None


@pytest.fixture(scope="module")
def devrun(ipfs_daemon: IpfsDaemon) -> Iterator[DevRun]:
    with AnvilNode() as node, IpfsClient(ipfs_daemon.api_url) as blobs:
        run = start_dev_run(node, blobs, ipfs_daemon.api_url)
        for key in (4, 5, 6, 7):
            run.client(key).register_trainer(run.run_id, ETH)
        yield run
    NONCES.reset()


@pytest.fixture
def blobs(devrun: DevRun) -> Iterator[IpfsClient]:
    with IpfsClient(devrun.api_url) as client:
        yield client


def _next_window(devrun: DevRun) -> int:
    clock = devrun.clock()
    window = clock.window_of(devrun.node.block_number() + 1) + 1
    devrun.mine_to(clock.start(window))
    return window


def test_withheld_reveal_is_journalled_as_missed(devrun: DevRun, tmp_path: Path, blobs: IpfsClient) -> None:
    node = TrainerNode(node_setup(devrun, 4, tmp_path, blobs), policy=Withholder())
    window = _next_window(devrun)
    assert node.step() == (True, True)
    devrun.mine_to(devrun.clock().end(window))
    assert node.step() == (True, False)
    entry = node.journal.get(window)
    assert entry is not None and entry.missed and "withheld" in entry.note and not entry.reveal_tx
    _, status = node.client.commitment_of(devrun.run_id, window, node.trainer)
    assert status == CommitStatus.COMMITTED
    assert node.journal.unrevealed() == []
    node.close()


def test_policy_sending_nothing_commits_nothing(devrun: DevRun, tmp_path: Path, blobs: IpfsClient) -> None:
    node = TrainerNode(node_setup(devrun, 5, tmp_path, blobs), policy=Abstainer())
    window = _next_window(devrun)
    assert node.step() == (True, True)
    assert node.step() == (False, False)  # not asked again for the same window
    assert node.journal.entries() == []
    assert node.client.commits(devrun.run_id, window) == []
    node.close()


def test_commit_too_late_is_missed_not_sent(devrun: DevRun, tmp_path: Path, blobs: IpfsClient) -> None:
    node = TrainerNode(node_setup(devrun, 6, tmp_path, blobs))
    window = _next_window(devrun)
    assert node.train_window(window) is not None  # prepared (journalled), then training "outlasted" the window
    devrun.mine_to(devrun.clock().end(window))
    assert node.step(train=False) == (True, False)
    entry = node.journal.get(window)
    assert entry is not None and entry.missed and not entry.commit_tx
    assert "window closed before the commit" in entry.note
    assert node.client.commits(devrun.run_id, window) == []
    node.close()


def test_lost_journal_does_not_commit_a_window_twice(devrun: DevRun, tmp_path: Path, blobs: IpfsClient) -> None:
    first = TrainerNode(node_setup(devrun, 7, tmp_path / "a", blobs))
    window = _next_window(devrun)
    assert first.step() == (True, True)
    first.close()
    fresh = TrainerNode(node_setup(devrun, 7, tmp_path / "b", blobs))  # same key, empty journal
    assert fresh.step() == (False, False)
    assert fresh.journal.get(window) is None
    assert len(fresh.client.commits(devrun.run_id, window)) == 1
    fresh.close()


def test_unstake_requests_then_withdraws(
    devrun: DevRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = 9
    devrun.client(key).register_trainer(devrun.run_id, ETH)
    monkeypatch.setenv("TRAINMARKET_PRIVATE_KEY", devrun.keys[key])
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path / "state"))
    argv = ["node", "unstake", "--deployment", str(devrun.write_deployment(tmp_path / "d.json"))]
    assert main(argv) == 0
    assert "unstake requested" in capsys.readouterr().out
    assert main(argv) == 2  # the delay has not passed
    assert "the stake unlocks at block" in capsys.readouterr().err
    info = devrun.sponsor.trainer_info(devrun.run_id, devrun.client(key).address_of_account)
    devrun.mine_to(info.unbonding_at)
    # the stake also waits for the epochs the trainer could have worked in: nobody votes here, so each is
    # finalised (by anyone) once its settlement phases are over
    for epoch in range(devrun.sponsor.get_run(devrun.run_id).next_epoch, info.until_epoch):
        closes = devrun.sponsor.settlement_of(devrun.run_id, epoch).closes_at
        devrun.mine_to(max(closes, devrun.node.block_number() + 1))
        devrun.sponsor.finalize_epoch(devrun.run_id, epoch)
    address = devrun.client(key).account.address
    before = devrun.web3.eth.get_balance(address)
    assert main(argv) == 0
    assert "withdrew 1 ETH of stake" in capsys.readouterr().out
    assert devrun.web3.eth.get_balance(address) > before + ETH // 2
