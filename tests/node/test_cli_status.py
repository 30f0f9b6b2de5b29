"""A validator publishes a window (new global model + evaluation report) on a real chain and IPFS; the
trainer's next window trains from that model, and `trainmarket node status` explains the window's score,
rank, rating and weight from the report, plus what is claimable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from base.report import AggregateInfo, ContributionScore, WindowReport, WindowReportInputs
from contracts.anvil import AnvilNode
from contracts.tx import NONCES
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node import commands as node_commands
from node.payloads import RunPayloads
from node.runner import TrainerNode
from tests.node.test_runner_integration import ETH, DevRun, node_setup, start_dev_run
from trainmarket.cli import main

TRAINER = 4
VALIDATOR = 1


@pytest.fixture(scope="module")
def devrun(ipfs_daemon: IpfsDaemon) -> Iterator[DevRun]:
    with AnvilNode() as node, IpfsClient(ipfs_daemon.api_url) as blobs:
        run = start_dev_run(node, blobs, ipfs_daemon.api_url)
        run.client(TRAINER).register_trainer(run.run_id, ETH)
        run.client(VALIDATOR).register_validator(run.run_id, 2 * ETH)
        yield run
    NONCES.reset()


def _score(trainer: str, cid: str, s_i: float, weight: float) -> ContributionScore:
    return ContributionScore(
        trainer=trainer, cid=cid, loss_before_own=5.0, loss_after_own=4.0, loss_before_random=5.0,
        loss_after_random=5.0 * (1 - s_i), s_i=s_i, own_gain=0.2, random_gain=s_i, b_i=1, binary_avg=0.05,
        mu=26.0, sigma=7.5, ordinal=3.5, sync=1.0, penalty=1.0, final=0.2, weight=weight,
        value_factor=0.8, effort=0.5, maturity=0.5, norm_factor=1.0, share=1.0, potential=0.4,
    )


def _report(window: int, me: str, my_cid: str, model_cid: str) -> WindowReport:
    rival = "0x" + "ab" * 20
    return WindowReport(
        window=window,
        inputs=WindowReportInputs(cids={me: my_cid, rival: "bafkrival"}, block_hash="0x00", base_model_cid="b",
                                  eval_step_size=1.0, strategy={}),
        scores=(_score(me, my_cid, 0.01, 0.25), _score(rival, "bafkrival", 0.05, 0.75)),
        rejections=(),
        accepted=(me, rival),
        aggregate=AggregateInfo(method="median_norm_clip_mean", contributors=(me, rival), clip_norm=1.0,
                                update_norm=0.5, learning_rate=0.7),
        model_cid=model_cid,
    )


def test_next_window_follows_the_published_model_and_status_explains_the_score(
    devrun: DevRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = devrun.client(TRAINER)
    me = trainer.address_of_account
    clock = devrun.clock()
    per_epoch = devrun.sponsor.get_run(devrun.run_id).windows_per_epoch
    # The validator votes (so its publication makes the canonical model) from the epoch after it registered.
    window = (clock.window_of(devrun.node.block_number() + 1) // per_epoch + 1) * per_epoch
    devrun.mine_to(clock.start(window))
    home = tmp_path / "home"
    with IpfsClient(devrun.api_url) as blobs:
        node = TrainerNode(node_setup(devrun, TRAINER, home, blobs))
        assert node.step() == (True, True)
        devrun.mine_to(clock.end(window))
        assert node.step() == (True, False)
        entry = node.journal.get(window)
        assert entry is not None and entry.revealed

        # The validator's new global model: the initial one moved a little, so it is a different CID.
        params = {n: p.detach().float() + 0.01 for n, p in node.model.named_parameters()}
        model_cid = blobs.add(RunPayloads(devrun.config, devrun.run_id, node.spec).encode_initial_model(params))
        report_cid = blobs.add(_report(window, me, entry.cid, model_cid).to_json().encode())
        devrun.mine_to(clock.reveal_end(window))
        devrun.client(VALIDATOR).publish_window(devrun.run_id, window, model_cid, report_cid)

        # Publishing happened inside window + 1's commit period and settled the canonical model (the only
        # voting validator is a majority): the node's next window trains from it, not the initial one.
        assert clock.can_commit(window + 1, devrun.node.block_number() + 1)
        assert node.step() == (True, True)
        following = node.journal.get(window + 1)
        assert following is not None and following.committed and following.base_model_cid == model_cid
        loaded = dict(node.model.named_parameters())
        assert not torch.equal(loaded["transformer.wte.weight"].detach(), params["transformer.wte.weight"])  # trained
        node.close()

    # The report stays sealed until the epoch's weight commits close: the validator publishes the epoch's other
    # windows, the epochs before it are settled, and once its commit phase is over the reports are revealed.
    validator, run_id, epoch = devrun.client(VALIDATOR), devrun.run_id, window // per_epoch
    assert devrun.sponsor.publications(run_id, window)[validator.address_of_account].report_cid is None
    for later in range(window + 1, (epoch + 1) * per_epoch):
        devrun.mine_to(clock.reveal_end(later))
        validator.publish_window(run_id, later, model_cid, report_cid)
    for earlier in range(devrun.sponsor.get_run(run_id).next_epoch, epoch):
        devrun.mine_to(max(devrun.node.block_number() + 1, devrun.sponsor.settlement_of(run_id, earlier).closes_at))
        devrun.sponsor.finalize_epoch(run_id, earlier)
    devrun.mine_to(max(devrun.node.block_number() + 1, devrun.sponsor.settlement_of(run_id, epoch).reveals_from))
    validator.reveal_reports(run_id, epoch, [report_cid] * per_epoch)

    monkeypatch.setattr(node_commands.console, "width", 250)  # one table row per line
    monkeypatch.setenv("TRAINMARKET_PRIVATE_KEY", devrun.keys[TRAINER])
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path / "state"))
    deployment = devrun.write_deployment(tmp_path / "deployment.json")
    assert main(["node", "status", "--deployment", str(deployment), "--home", str(home)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith(str(window)))
    assert "revealed" in row and "2/2" in row and "0.01" in row and "0.25" in row and "26.00±7.50" in row
    assert "claimable now 0 ETH" in out and "stake 1 ETH (active)" in out
    # Why the weight is 0.25: the report's own factors, and how far the trainer is from a slash.
    assert ("weight 0.25 = final/Σfinal over 2 scored; final 0.2 = value factor 0.8 × effort 0.5 × maturity 0.5 × "
            "norm factor 1 × share 1 × penalty 1; 0.4 at full maturity") in row
    assert "missed reveals 0 of 2: 2 more and 10% of the stake (0.1 ETH) is slashed" in out
