"""Honest validators dispute a peer's ballot that does not follow from its own revealed reports, on a real Anvil and
IPFS daemon with three validator loops: the two honest ones audit the third's ballot after the epoch's settlement,
dispute it, and their stake majority forfeits its credit; nobody disputes an honest ballot, and a restarted
validator does not dispute twice (validator/disputes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from tests.validator.loop_harness import Net, play_window, publish_initial_model, start_net
from validator.disputes import TX_DISPUTE, BallotDisputes
from validator.loop import configure_determinism
from validator.settlement import EpochBallot


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, ipfs_daemon: IpfsDaemon) -> Iterator[tuple[Net, Path]]:
    configure_determinism()
    tmp = tmp_path_factory.mktemp("disputes")
    with IpfsClient(ipfs_daemon.api_url) as blobs:
        net = start_net(tmp, blobs, n_trainers=3, n_validators=3)
        try:
            base_cid, base = publish_initial_model(net)
            play_window(net, 0, base_cid, base)
            yield net, tmp
        finally:
            net.node.stop()


def logs(net: Net, name: str) -> list[Any]:
    return list(net.sponsor._logs(name, {"runId": net.run_id, "epoch": 0}))


def test_a_ballot_that_does_not_follow_from_its_reports_is_disputed_and_forfeited(net: tuple[Net, Path]) -> None:
    network, tmp = net
    loops = [network.loop(v, tmp / f"validator-{i}") for i, v in enumerate(network.validators)]
    liar = loops[2]
    own_ballot = liar.settler.ballot

    def lagged(epoch: int) -> EpochBallot:
        """Its own reports are revealed, but the ballot is not what they give: all weight on one trainer."""
        ballot = own_ballot(epoch)
        return EpochBallot(ballot.weights, [sum(ballot.vector)] + [0] * (len(ballot.vector) - 1), ballot.salt,
                           ballot.payout)

    liar.settler.ballot = lagged  # type: ignore[method-assign]
    accused = liar.client.address_of_account
    for _ in range(40):
        if logs(network, "ValidatorCreditForfeited"):
            break
        busy = [loop.step() for loop in loops]
        if not any(busy):
            network.node.mine(1)
    assert network.sponsor.epoch_info(network.run_id, 0).finalized
    (forfeit,) = logs(network, "ValidatorCreditForfeited")
    credited = {g["args"]["validator"]: int(g["args"]["amount"]) for g in logs(network, "ValidatorCredited")}
    assert forfeit["args"]["validator"] == accused and int(forfeit["args"]["amount"]) == credited[accused] > 0
    disputes = {(g["args"]["disputer"], g["args"]["accused"]) for g in logs(network, "BallotDisputed")}
    honest = [loop.client.address_of_account for loop in loops[:2]]
    assert disputes == {(v, accused) for v in honest}  # the honest ballots follow from their reports
    for v in honest:
        held = network.sponsor.held_credit(network.run_id, v)
        assert held.epoch == 0 and held.amount == credited[v] > 0 and not held.forfeited
    assert network.sponsor.held_credit(network.run_id, accused).forfeited

    # a restarted validator audits again and sends nothing: the chain shows its dispute (the send path's done())
    restarted = BallotDisputes(loops[0].ctx, loops[0].client, loops[0].txs)
    assert restarted.step() is False
    assert len(logs(network, "BallotDisputed")) == 2
    assert not [tx for tx in loops[0].store.unconfirmed_txs() if tx.kind == TX_DISPUTE]
    for loop in loops:
        loop.store.close()
