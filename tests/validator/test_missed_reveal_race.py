"""Two validators report the same missed reveal on a real Anvil with automining off, as on a chain with a block
clock: the other validator's reportMissedReveal is in the mempool when ours is estimated against the pending
state, so ours is refused (AlreadyRevealed) while the mined chain still says `committed`.

Found in the e2e demo once the missed-reveal reports were pipelined: the second validator read `committed`,
concluded the report had failed and stopped its loop ("still unreported"). Now it waits up to 3 blocks for the
other report to land, and reports again itself when it does not (the other transaction was dropped)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from web3 import Web3

from contracts.client import TrainingRunClient
from contracts.sending import broadcast_all
from contracts.tx import NONCES, tx_hash_of
from contracts.types import CommitStatus
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from tests.validator.loop_harness import Net, play_window, publish_initial_model, start_net
from validator.loop import ValidatorLoop
from validator.window_inputs import GatheredWindow, gather_window

SILENT = 1  # trainer index that commits in window 0 and never reveals


@dataclass
class Missed:
    net: Net
    loop: ValidatorLoop  # validator 0's loop, window 0 gathered from the chain
    gathered: GatheredWindow
    silent: str
    snapshot: str  # window 0's reveal period is over, nobody has reported the miss


@pytest.fixture(scope="module")
def missed(tmp_path_factory: pytest.TempPathFactory, ipfs_daemon: IpfsDaemon) -> Iterator[Missed]:
    tmp = tmp_path_factory.mktemp("missed-race")
    with IpfsClient(ipfs_daemon.api_url) as blobs:
        net = start_net(tmp, blobs, n_trainers=2, n_validators=2)
        try:
            base_cid, base = publish_initial_model(net)
            play_window(net, 0, base_cid, base, silent=SILENT)
            loop = net.loop(net.validators[0], tmp / "validator-a")
            gathered = gather_window(loop.ctx, 0, base_cid, base, {base_cid: 0})
            silent = net.trainers[SILENT].address_of_account
            assert gathered.missed_reveals == (silent.lower(),)  # the loop finds the miss on chain itself
            yield Missed(net, loop, gathered, silent, net.node.snapshot())
        finally:
            net.node.stop()


@pytest.fixture()
def chain(missed: Missed) -> Iterator[Missed]:
    """Window 0 as the fixture left it, automining off; afterwards automining back on and the state restored."""
    NONCES.reset()
    missed.net.node.set_automine(False)
    try:
        yield missed
    finally:
        missed.net.node.set_automine(True)
        missed.net.node.revert(missed.snapshot)
        missed.snapshot = missed.net.node.snapshot()  # a snapshot id is single-use
        NONCES.reset()


def send_report(reporter: TrainingRunClient, net: Net, trainer: str) -> str:
    """The other validator's reportMissedReveal, signed (estimated) and broadcast: pending until a block is mined."""
    call = reporter.contract.functions.reportMissedReveal(net.run_id, 0, Web3.to_checksum_address(trainer))
    raw = reporter.signed(call, "reportMissedReveal")
    broadcast_all(reporter.web3, [raw])
    return tx_hash_of(raw)


def report_in_background(m: Missed, pool: ThreadPoolExecutor) -> tuple[Future[None], threading.Event]:
    """Our validator's report_missed in a thread, and an event set once it has been refused and has read the
    chain's answer (`committed`: the other report is still pending)."""
    refused = threading.Event()
    read: Callable[..., Any] = m.loop.client.commitment_of

    def reading(*args: Any, **kwargs: Any) -> Any:
        answer = read(*args, **kwargs)
        refused.set()  # after the read: the chain had not mined the other report when we looked
        return answer

    m.loop.client.commitment_of = reading  # type: ignore[method-assign]
    return pool.submit(m.loop.report_missed, 0, m.gathered), refused


def reporters(net: Net, trainer: str) -> list[str]:
    logs = net.sponsor._logs("RevealMissed", {"runId": net.run_id, "trainer": Web3.to_checksum_address(trainer)})
    return [e["args"]["reporter"] for e in logs]


def sent_count(client: TrainingRunClient) -> int:
    return int(client.web3.eth.get_transaction_count(client.account.address, "latest"))


def test_a_report_refused_because_anothers_is_pending_waits_for_it(chain: Missed) -> None:
    net, loop, other = chain.net, chain.loop, chain.net.validators[1]
    ours_before = sent_count(loop.client)
    send_report(other, net, chain.silent)
    with ThreadPoolExecutor(max_workers=1) as pool:
        done, refused = report_in_background(chain, pool)
        try:
            assert refused.wait(timeout=60), "our report was never refused and read back"
            assert net.sponsor.commitment_of(net.run_id, 0, chain.silent)[1] == CommitStatus.COMMITTED
            net.node.mine(1)  # the other validator's report lands
            done.result(timeout=60)  # no "still unreported": the loop goes on
        finally:
            del loop.client.commitment_of
    assert net.sponsor.commitment_of(net.run_id, 0, chain.silent)[1] == CommitStatus.MISSED
    assert reporters(net, chain.silent) == [other.account.address]  # reported once, by the other validator
    assert net.sponsor.trainer_info(net.run_id, chain.silent).misses == 1
    assert sent_count(loop.client) == ours_before  # we sent nothing: ours was refused at estimation


def test_a_report_refused_because_anothers_is_pending_is_sent_again_when_that_one_never_lands(
        chain: Missed) -> None:
    net, loop, other = chain.net, chain.loop, chain.net.validators[1]
    pending = send_report(other, net, chain.silent)
    with ThreadPoolExecutor(max_workers=1) as pool:
        done, refused = report_in_background(chain, pool)
        try:
            assert refused.wait(timeout=60), "our report was never refused and read back"
            net.node.rpc("anvil_dropTransaction", [pending])  # the other validator's report never lands
            deadline = time.monotonic() + 60
            while not done.done() and time.monotonic() < deadline:  # a block clock: our validator waits 3
                net.node.mine(1)  # blocks for the other report, then sends its own and awaits its receipt
                time.sleep(0.2)
            done.result(timeout=0)
        finally:
            del loop.client.commitment_of
    assert net.sponsor.commitment_of(net.run_id, 0, chain.silent)[1] == CommitStatus.MISSED
    assert reporters(net, chain.silent) == [loop.client.account.address]  # ours, sent again after the wait
    assert net.sponsor.trainer_info(net.run_id, chain.silent).misses == 1
