"""The validator's window round on a real Anvil and a real IPFS daemon: trainers train in-process and
commit/reveal real payloads; the loop scores, publishes, submits the epoch's weights once, and resumes after a
SIGKILL at three points between scoring and the publish being recorded, without a second publish. The run's payload
cap refuses honest payloads at the fetch; a finalize race is lost with real transactions in one block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from web3 import Web3
from web3.types import Wei

from base.commitments import report_commitment
from base.report import RejectReason, WindowReport
from base.units import ETH
from contracts.errors import TransactionFailed
from contracts.sending import broadcast_all
from contracts.tx import NONCES, sign_transaction
from contracts.types import CommitStatus
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from tests.validator.loop_harness import Net, initial_params, play_window, publish_initial_model, start_net
from validator.fetch import Failure, fetch_payloads
from validator.loop import ValidatorLoop, configure_determinism
from validator.store import TX_PUBLISH
from validator.window_inputs import gather_window

REPO = Path(__file__).resolve().parents[2]
# Trainer indices: publishes non-payload bytes / commits but never reveals / reveals a CID it never published.
GARBAGE, SILENT, ABSENT = 3, 4, 5
FETCH_TIMEOUT_S = 3.0  # how long the offline daemon is given to find the absent CID


@dataclass
class Played:
    net: Net
    api_url: str
    base_cid: str
    cids: dict[str, str]
    loop: ValidatorLoop
    tmp: Path


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory, ipfs_daemon: IpfsDaemon) -> Iterator[Played]:
    configure_determinism()
    tmp = tmp_path_factory.mktemp("loop")
    with IpfsClient(ipfs_daemon.api_url, timeout=FETCH_TIMEOUT_S, retries=0) as blobs:
        net = start_net(tmp, blobs, n_trainers=6)
        try:
            base_cid, base = publish_initial_model(net)
            cids = play_window(net, 0, base_cid, base, garbage=GARBAGE, silent=SILENT, absent=ABSENT)
            loop = net.loop(net.validators[0], tmp / "validator-a")
            assert loop.initial_cid == base_cid  # the loop derives the same initial model from the config
            assert loop.step()  # window 0: score and publish
            yield Played(net, ipfs_daemon.api_url, base_cid, cids, loop, tmp)
        finally:
            net.node.stop()


def test_window_is_scored_and_published_on_chain_and_ipfs(played: Played) -> None:
    net, store = played.net, played.loop.store
    stored = store.window_report(0)
    assert stored is not None and stored.status == "published"
    me = net.validators[0].address_of_account
    on_chain = net.sponsor.publications(net.run_id, 0)[me]
    assert on_chain.model_cid == stored.model_cid
    # The report is sealed: on chain only its commitment, bound to this validator, until the epoch's weight
    # commits close; its CID is the one its stored bytes will have on IPFS.
    assert on_chain.report_cid is None
    assert on_chain.report_commitment == report_commitment(stored.report_cid, me)
    data = played.loop.report_bytes(0)
    assert net.blobs.add(data, pin=False, only_hash=True) == stored.report_cid
    if not net.sponsor.reports_revealed(net.run_id, me, 0):  # (tests may run in any order)
        # Nor is it on the IPFS daemon the validators share: `pin/ls` would list it to anyone.
        listed = httpx.post(f"{played.api_url}/api/v0/pin/ls", params={"arg": stored.report_cid}, timeout=10)
        assert listed.status_code != 200 and "not pinned" in listed.text, listed.text  # js-ipfs lists in base58

    report = WindowReport.from_json(data)
    assert report.model_cid == on_chain.model_cid and report.inputs.base_model_cid == played.base_cid
    trainers = [t.address_of_account.lower() for t in net.trainers]
    honest = {t for i, t in enumerate(trainers) if i not in (GARBAGE, SILENT, ABSENT)}
    assert {s.trainer for s in report.scores} == honest
    reasons = {r.trainer: (r.reason, r.detail.split(":")[0]) for r in report.rejections}
    assert reasons == {trainers[GARBAGE]: (RejectReason.MALFORMED, "undecodable"),
                       trainers[SILENT]: (RejectReason.MISSING_REVEAL, "committed but never revealed"),
                       trainers[ABSENT]: (RejectReason.UNAVAILABLE,
                                          "no one served the payload before the fetch deadline")}
    assert abs(sum(s.weight for s in report.scores) - 1.0) < 1e-9
    # Every revealed contribution is scored or unscored for a stated reason (bench.load's scored_fraction).
    stats = json.loads(store.get_value("window:0:stats") or "{}")
    assert stats["unscored"] == {"malformed": 1, "unavailable": 1}
    assert stats["scored"] == len(honest) and stats["scored"] + 2 == stats["revealed"]
    ratings = store.ratings()
    assert set(ratings) == honest and all(r.misses == 0 and r.last_window == 0 for r in ratings.values())
    # The new global model is on IPFS and decodes to the model's shapes.
    params = net.payloads.decode_model(net.blobs.cat(on_chain.model_cid, 1 << 24), played.net.ctx(
        net.sponsor).spec, 1 << 24)
    assert set(params) == set(initial_params(net))
    # The silent trainer's miss was reported to the contract.
    silent = net.trainers[SILENT].address_of_account
    assert net.sponsor.commitment_of(net.run_id, 0, silent)[1] == CommitStatus.MISSED
    assert net.sponsor.trainer_info(net.run_id, silent).misses == 1
    # So was the payload nobody served: the only validator is a stake majority, so it counts as a miss too.
    absent = net.trainers[ABSENT].address_of_account
    assert net.sponsor.unavailable_stake(net.run_id, 0, absent) > 0
    assert net.sponsor.commitment_of(net.run_id, 0, absent)[1] == CommitStatus.MISSED


def test_a_recorded_window_is_not_rescored(played: Played) -> None:
    before = played.loop.store.window_report(0)
    report = played.loop.process_window(0)  # a recorded window is only (re)published, never rescored
    assert before is not None and report.model_cid == before.model_cid
    assert played.loop.store.window_report(0) == before
    assert len(played.net.sponsor._logs("WindowPublished", {"runId": played.net.run_id, "window": 0})) == 1


def test_epoch_weights_are_submitted_once_and_the_epoch_finalized(played: Played) -> None:
    net, loop = played.net, played.loop
    net.mine_to(net.sponsor.epoch_end_block(net.run_id, 0))
    assert loop.step()  # commit, then reveal, weights for epoch 0, then finalize (the only validator voted)
    assert not loop.step()  # nothing due: window 1's reveal period is not over
    submitted = net.sponsor._logs("WeightsRevealed", {"runId": net.run_id, "epoch": 0})
    assert len(submitted) == 1
    # Its report was revealed first (the share pays only validators whose reports are revealed) and is on IPFS.
    me = net.validators[0].address_of_account
    assert net.sponsor.reports_revealed(net.run_id, me, 0)
    stored = loop.store.window_report(0)
    assert stored is not None and net.sponsor.publications(net.run_id, 0)[me].report_cid == stored.report_cid
    assert net.blobs.cat(stored.report_cid, 1 << 20) == loop.report_bytes(0)
    held = net.sponsor.held_credit(net.run_id, me)  # the validator share, held while epoch 0 can be disputed
    assert held.epoch == 0 and held.amount > 0 and held.disputable and not held.forfeited
    info = net.sponsor.epoch_info(net.run_id, 0)
    assert info.finalized and info.submissions == 1
    weights = loop.store.epoch_weights(0)
    assert weights is not None and max(weights, key=lambda t: weights[t]) in played.cids
    rewards = {t: sum(r.amount_wei for r in loop.store.trainer_rewards(t)) for t in played.cids}
    assert sum(rewards.values()) > 0
    best = max(weights, key=lambda t: weights[t])
    assert rewards[best] == max(rewards.values())
    assert net.sponsor.claimable(net.run_id, best) == rewards[best]


CRASH = """
import os, signal, sys
from pathlib import Path
from base.run_config import load_run_config
from validator.context import chain_client, ipfs_client, open_run
from validator.loop import ValidatorLoop, configure_determinism
from validator.store import ValidatorStore
rpc, contract, key, block, run_id, api, config_cid, home, point = sys.argv[1:]

def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after_record":
    ValidatorLoop.publish = die
elif point == "after_pending":
    original = ValidatorStore.record_pending_tx
    def record_then_die(self, *a, **k):
        original(self, *a, **k)
        die()
    ValidatorStore.record_pending_tx = record_then_die
elif point == "after_send":
    ValidatorStore.mark_published = die
configure_determinism()
client = chain_client(rpc, contract, key, int(block))
blobs = ipfs_client(api, timeout=3.0)
config = load_run_config(client, int(run_id), blobs, config_cid)
ctx = open_run(client, int(run_id), blobs, config, Path(home) / "datasets")
store = ValidatorStore(Path(home) / "state.sqlite3")
ValidatorLoop(ctx, client, store, Path(home) / "state").step()
print("survived")
"""


@pytest.mark.parametrize(("point", "key_index"), [("after_record", 2), ("after_pending", 3), ("after_send", 0)])
def test_resume_after_sigkill_publishes_exactly_once_with_the_same_cids(played: Played, point: str,
                                                                          key_index: int) -> None:
    net = played.net
    validator = net.sponsor.with_account(Account.from_key(net.node.private_keys[key_index]))
    validator.register_validator(net.run_id, 2 * ETH)
    home = played.tmp / f"crash-{point}"
    argv = [net.node.rpc_url, net.sponsor.contract.address, validator.account.key.hex(), str(net.sponsor.from_block),
            str(net.run_id), played.api_url, net.config_cid, str(home), point]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", CRASH, *argv], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == -9, done.stdout + done.stderr
    NONCES.reset()

    loop = net.loop(validator, home)
    assert loop.store.window_status(0) == "scored"  # recorded, publish not confirmed
    loop.step()
    stored = loop.store.window_report(0)
    assert stored is not None and stored.status == "published"
    me = validator.address_of_account
    events = [e for e in net.sponsor._logs("WindowPublished", {"runId": net.run_id, "window": 0})
              if e["args"]["validator"] == me]
    assert len(events) == 1
    reference = played.loop.store.window_report(0)
    assert reference is not None
    # Two validators, one killed and restarted, agree byte for byte.
    assert (stored.model_cid, stored.report_cid) == (reference.model_cid, reference.report_cid)
    pending = loop.store.pending_tx(TX_PUBLISH, "0")
    assert pending is not None and pending.status == "confirmed"
    if point != "after_record":
        assert pending.tx_hash.removeprefix("0x") == events[0]["transactionHash"].hex().removeprefix("0x")
    loop.store.close()


def test_serve_runs_the_loop_beside_the_api(played: Played) -> None:
    """What `validator serve` does: the loop in the app's background thread, the state over HTTP."""
    import httpx

    from base.process import free_port
    from validator.service import ServiceSettings, create_app, running_service

    loop = played.loop
    settings = ServiceSettings(port=free_port(), db_path=loop.store.path)
    app = create_app(loop.store, settings, background=lambda stop: loop.run(stop, poll_seconds=0.05))
    with running_service(app, settings) as url:
        health = httpx.get(f"{url}/health").json()
        window = httpx.get(f"{url}/windows/0").json()
    assert health["loop"] == "running" and health["last_processed_window"] == 0, health
    stored = loop.store.window_report(0)
    assert stored is not None and window["status"] == "published" and window["model_cid"] == stored.model_cid


def test_the_runs_payload_cap_is_enforced_where_the_validator_fetches(played: Played) -> None:
    """Honest payloads one byte over the run's `max_payload_bytes` are refused by the fetch (no bytes handed on)
    and rejected as malformed; at exactly their size they are accepted. Only the cap can refuse these: they are
    honest, so no later decoding check would catch them instead."""
    net = played.net
    cheats = {net.trainers[i].address_of_account.lower() for i in (GARBAGE, SILENT, ABSENT)}
    honest = {t: cid for t, cid in played.cids.items() if t not in cheats}
    sizes = [len(net.blobs.cat(cid, 1 << 20)) for cid in honest.values()]
    for cap, accepted in ((min(sizes) - 1, set()), (max(sizes), set(honest))):
        fetched = fetch_payloads(net.blobs, sorted(honest.items()), cap, net.config.payload_fetch_seconds)
        refused = {f.trainer for f in fetched if f.failure == Failure.TOO_LARGE and f.data is None}
        assert refused == set(honest) - accepted, (cap, sizes, fetched)
        ctx = replace(net.ctx(net.validators[0]), config=net.config.model_copy(update={"max_payload_bytes": cap}))
        gathered = gather_window(ctx, 0, played.base_cid, initial_params(net), {played.base_cid: 0})
        assert {c.trainer for c in gathered.inputs.contributions} == accepted, cap
        over = {r.trainer: (r.reason, r.detail) for r in gathered.inputs.prior_rejections if r.trainer in honest}
        assert over == {t: (RejectReason.MALFORMED, f"payload over the run's {cap}-byte cap")
                        for t in set(honest) - accepted}, cap


def _pending(web3: Web3, address: str, count: int, timeout_s: float = 60.0) -> None:
    """Wait until `address` has `count` transactions including the mempool (sent by another thread)."""
    deadline = time.monotonic() + timeout_s
    while web3.eth.get_transaction_count(address, "pending") < count:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "the settler's transaction never reached the mempool"
        time.sleep(0.02)


def test_losing_a_finalize_race_is_not_an_error(played: Played) -> None:
    """Two validators finalize the same epoch in one block, with automining off: both transactions passed
    estimation, the rival's (higher gas price) is mined first and finalizes the epoch, ours reverts on chain
    (TransactionFailed). That is fine because the chain shows the epoch finalized. A finalize that failed and
    left the epoch open (here: another transaction of the same key took its nonce) is an error."""
    net, settler = played.net, played.loop.settler
    web3 = Web3(Web3.HTTPProvider(net.node.rpc_url))  # this thread's own connection
    me, rival = settler.client.account, net.validators[1]
    epoch = net.sponsor.get_run(net.run_id).next_epoch  # the first one still open, whatever ran before
    net.mine_to(net.sponsor.settlement_of(net.run_id, epoch).closes_at)
    net.node.set_automine(False)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="settler")  # our validator's loop, in effect
    try:
        vectors = [r.weights for r in rival.revealed_weights(net.run_id, epoch)]
        call = rival.contract.functions.finalizeEpoch(net.run_id, epoch, vectors)
        rival_raw = sign_transaction(web3, rival.account, {
            "to": rival.contract.address, "data": call._encode_transaction_data(),
            "gasPrice": Wei(2 * web3.eth.gas_price)}, "finalizeEpoch", rival.decoder)  # estimated: the epoch is open
        sent = web3.eth.get_transaction_count(me.address, "pending")
        ours = pool.submit(settler.finalize, epoch)
        _pending(web3, me.address, sent + 1)  # ours passed estimation too and waits in the mempool
        broadcast_all(web3, [rival_raw])
        net.node.mine(1)
        assert ours.result(timeout=120) is True
        block = web3.eth.get_block("latest", full_transactions=True)
        by_sender = {tx["from"]: web3.eth.get_transaction_receipt(tx["hash"])["status"]
                     for tx in block["transactions"]}
        assert by_sender == {rival.account.address: 1, me.address: 0}  # one block: the rival won, ours reverted
        assert net.sponsor.epoch_info(net.run_id, epoch).finalized
        assert len(net.sponsor._logs("EpochFinalized", {"runId": net.run_id, "epoch": epoch})) == 1

        net.mine_to(net.sponsor.settlement_of(net.run_id, epoch + 1).closes_at)
        sent = web3.eth.get_transaction_count(me.address, "pending")
        ours = pool.submit(settler.finalize, epoch + 1)
        _pending(web3, me.address, sent + 1)
        displacing = me.sign_transaction({"to": me.address, "value": 0, "gas": 21_000, "nonce": sent,
                                          "gasPrice": 2 * web3.eth.gas_price, "chainId": web3.eth.chain_id})
        broadcast_all(web3, [bytes(displacing.raw_transaction)])
        net.node.mine(1)
        with pytest.raises(TransactionFailed, match=f"nonce {sent} was used by another transaction"):
            ours.result(timeout=120)
        assert not net.sponsor.epoch_info(net.run_id, epoch + 1).finalized
    finally:
        net.node.set_automine(True)
        net.node.mine(1)  # a transaction still waiting (a failed run of this test) is mined: the pool can end
        pool.shutdown(wait=True)
        NONCES.reset()
