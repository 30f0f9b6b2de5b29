"""The validator's weight commit–reveal survives a crash at every step on a real Anvil and IPFS daemon: the
ballot (vector and salt) is stored before the commit is sent, so a restarted validator reveals exactly what it
committed, and neither transaction is ever sent twice. A crash is an exception that nothing catches, raised
between two steps; SQLite has then committed exactly what a SIGKILL at that point would have left."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contracts.tx import NONCES
from contracts.types import CommitStatus
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from tests.validator.loop_harness import Net, play_window, publish_initial_model, start_net
from validator import settlement
from validator.audit import audit_ballot
from validator.loop import ValidatorLoop, configure_determinism
from validator.settlement import TX_COMMIT_WEIGHTS
from validator.store import TX_SUBMIT_WEIGHTS, ValidatorStore


class Crash(BaseException):
    """The process dies here (BaseException: no handler of the loop catches it)."""


@dataclass
class Played:
    net: Net
    snapshot: str  # the chain after window 0's reveal period: nothing scored or published yet
    tmp: Path


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory, ipfs_daemon: IpfsDaemon) -> Iterator[Played]:
    configure_determinism()
    tmp = tmp_path_factory.mktemp("settlement-crash")
    with IpfsClient(ipfs_daemon.api_url) as blobs:
        net = start_net(tmp, blobs, n_trainers=3, n_validators=1)
        try:
            base_cid, base = publish_initial_model(net)
            play_window(net, 0, base_cid, base)
            yield Played(net, net.node.snapshot(), tmp)
        finally:
            net.node.stop()


def events(net: Net, name: str, validator: str) -> list[Any]:
    logs = net.sponsor._logs(name, {"runId": net.run_id, "epoch": 0})
    return [e for e in logs if e["args"]["validator"] == validator]


def crash_at(store: ValidatorStore, method: str, kind: str | None, after: bool) -> None:
    """Make `store.<method>` crash (before or after doing its work) when called for `kind` (None: any call)."""
    original: Callable[..., Any] = getattr(store, method)

    def dying(*args: Any, **kwargs: Any) -> Any:
        if kind is not None and (not args or args[0] != kind):
            return original(*args, **kwargs)
        if after:
            original(*args, **kwargs)
        raise Crash(method)

    setattr(store, method, dying)


# (store method, tx kind it must be called for, crash after it did its work): every step of the settlement
CRASH_POINTS = {
    "before the commit is recorded as sent": ("record_pending_tx", TX_COMMIT_WEIGHTS, False),
    "after the commit is recorded, before it is broadcast": ("record_pending_tx", TX_COMMIT_WEIGHTS, True),
    "after the commit is mined, before it is confirmed": ("confirm_tx", TX_COMMIT_WEIGHTS, False),
    "after the reveal is recorded, before it is broadcast": ("record_pending_tx", TX_SUBMIT_WEIGHTS, True),
    "after the reveal is mined, before the submission is recorded": ("record_epoch_submission", None, False),
}


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_restart_finishes_the_ballot_without_a_second_transaction(played: Played, point: str) -> None:
    net = played.net
    net.node.revert(played.snapshot)
    played.snapshot = net.node.snapshot()  # a snapshot is single-use
    NONCES.reset()
    home = played.tmp / point.replace(" ", "-").replace(",", "")
    validator = net.validators[0]
    me = validator.address_of_account
    loop = net.loop(validator, home)
    assert loop.step()  # window 0: scored and published
    net.mine_to(net.sponsor.epoch_end_block(net.run_id, 0))

    method, kind, after = CRASH_POINTS[point]
    crash_at(loop.store, method, kind, after)
    with pytest.raises(Crash):
        for _ in range(3):
            loop.step()
    stored = loop.store.get_value("epoch:0:ballot")
    assert stored is not None  # the ballot was stored before anything was sent
    loop.store.close()
    NONCES.reset()  # the dead process's nonce cache is gone

    restarted: ValidatorLoop = net.loop(validator, home)
    assert restarted.settler.ballot(0).to_json() == stored  # the same vector and salt, not a new ballot
    for _ in range(3):
        if net.sponsor.epoch_info(net.run_id, 0).finalized:
            break
        restarted.step()
    assert len(events(net, "WeightsCommitted", me)) == 1
    revealed = events(net, "WeightsRevealed", me)
    assert len(revealed) == 1
    assert bytes(revealed[0]["args"]["weights"]) == restarted.settler.ballot(0).packed
    assert net.sponsor.ballot_of(net.run_id, me).status == CommitStatus.REVEALED
    assert net.sponsor.epoch_info(net.run_id, 0).finalized
    assert restarted.store.epoch_submitted(0)
    assert not [tx for tx in restarted.store.unconfirmed_txs() if tx.kind in (TX_COMMIT_WEIGHTS, TX_SUBMIT_WEIGHTS)]
    restarted.store.close()


def test_a_ballot_that_reaches_the_chain_after_its_phase_costs_the_vote_not_the_loop(played: Played) -> None:
    """Found by the `validator_lag` fault scenario (a validator SIGSTOPped past its epoch's settlement): the
    validator read the settlement state (reveals open), was paused, and sent its reveal after the others had
    settled the epoch without it. The reveal reverted (EpochOutOfOrder) and the loop stopped for good; now the
    vote is lost and the loop goes on."""
    net = played.net
    net.node.revert(played.snapshot)
    played.snapshot = net.node.snapshot()
    NONCES.reset()
    validator = net.validators[0]
    me = validator.address_of_account
    loop = net.loop(validator, played.tmp / "paused-past-its-reveal")
    assert loop.step()  # window 0: scored and published
    net.mine_to(net.sponsor.epoch_end_block(net.run_id, 0))
    real = loop.settler.client.settlement_of
    reads: list[Any] = []

    def paused_after_commit(run_id: int, epoch: int) -> Any:
        state = real(run_id, epoch)
        reads.append(state)
        if len(reads) == 2:  # read after its commit; it sleeps, and the epoch is settled without its reveal
            net.mine_to(state.closes_at)
            net.sponsor.finalize_epoch(net.run_id, 0)
        return state

    loop.settler.client.settlement_of = paused_after_commit  # type: ignore[method-assign]
    for _ in range(3):
        loop.step()  # never raises
    assert len(reads) >= 2, "the reveal was never attempted"
    assert net.sponsor.epoch_info(net.run_id, 0).finalized
    assert net.sponsor.ballot_of(net.run_id, me).status == CommitStatus.COMMITTED  # committed, never revealed
    assert not events(net, "WeightsRevealed", me)
    assert not loop.store.epoch_submitted(0)
    loop.store.close()


@pytest.mark.parametrize("inflated", [False, True], ids=["honest", "inflated payout"])
def test_audit_checks_the_revealed_ballot_against_the_validators_own_reports(played: Played, inflated: bool,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`validator audit` recomputes a revealed ballot (payout and weights) from the validator's revealed reports:
    an honest ballot matches; one whose payout was raised to the whole reward (a validator voting trainers more
    than their records support) is a mismatch."""
    net = played.net
    net.node.revert(played.snapshot)
    played.snapshot = net.node.snapshot()
    NONCES.reset()
    if inflated:
        honest = settlement.ballot_numbers
        monkeypatch.setattr(settlement, "ballot_numbers", lambda *a: (*honest(*a)[:2], 0xFFFF))
    validator = net.validators[0]
    loop = net.loop(validator, played.tmp / f"audit-ballot-{inflated}")
    assert loop.step()
    net.mine_to(net.sponsor.epoch_end_block(net.run_id, 0))
    for _ in range(4):
        if net.sponsor.epoch_info(net.run_id, 0).finalized:
            break
        loop.step()
    assert net.sponsor.epoch_info(net.run_id, 0).finalized
    loop.store.close()
    checks = {c.path: c for c in audit_ballot(net.ctx(net.sponsor), 0, validator.address_of_account)}
    assert set(checks) == {"ballot[epoch 0].payout", "ballot[epoch 0].weights"}
    assert checks["ballot[epoch 0].weights"].ok
    assert checks["ballot[epoch 0].payout"].ok is not inflated, checks
    if inflated:
        assert checks["ballot[epoch 0].payout"].published == 0xFFFF > checks["ballot[epoch 0].payout"].recomputed
