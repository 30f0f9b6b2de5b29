"""A weight copier as its own process: `python -m bench.faults.copier --deployment … --modes wait guess`.

A registered validator that evaluates nothing. Window by window it republishes what an honest validator
published (the window's canonical model) and seals a "report" of its own (the model's CID: it never evaluates),
which is all the contract asks before it takes a ballot; each epoch it then tries to have the honest validators'
work counted as its own vote, with one strategy per epoch, in turn:
  wait    — commit once the others' vectors are revealed, i.e. once the median is known;
  guess   — commit a placeholder as soon as the commit phase opens, and once the others' vectors are revealed,
            reveal their median instead;
  report  — rebuild an honest validator's epoch vector from its evaluation reports of the epoch's windows and
            commit that: the reports are sealed until the weight commits close, so it tries on every poll until
            one is readable, and commits then (the contract refuses a commit after its phase);
  lagged  — (measured, not expected to fail) commit the previous epoch's consensus, public since its
            finalisation (uniform in the first epoch), reveal its sealed reports, then that vector.
Every attempt and how the chain answered goes to `--log` as a JSON line; bench.faults.weight_copier judges
what the account earned from the chain itself."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Any

from base.errors import TrainmarketError
from base.report import WindowReport
from contracts.client import TrainingRunClient, unpack_weights
from contracts.errors import ContractReverted, TransactionFailed
from contracts.types import CommitStatus
from ipfs.client import IpfsClient
from validator.context import chain_client, read_deployment
from validator.scoring import epoch_weights, to_u16_weights
from validator.settlement import weight_vector

COPIER_KEY_ENV = "TRAINMARKET_VALIDATOR_KEY"
MODES = ("wait", "guess", "report", "lagged")
REPORT_MAX_BYTES = 4 * 1024 * 1024


def revealed_median(vectors: list[tuple[bytes, int]], slots: int) -> list[int]:
    """The stake-weighted median, per trainer slot, of revealed vectors (each normalised to sum 1) as uint16."""
    normalised: list[tuple[list[float], int]] = []
    for packed, stake in vectors:
        _, values = unpack_weights(packed)
        values += [0] * (slots - len(values))
        total = sum(values)
        normalised.append(([v / total if total else 0.0 for v in values], stake))
    total_stake = sum(stake for _, stake in normalised)
    median: list[float] = []
    for slot in range(slots):
        acc = 0
        chosen = 0.0
        for value, stake in sorted(((vec[slot], stake) for vec, stake in normalised), reverse=True):
            acc += stake
            if 2 * acc > total_stake:
                chosen = value
                break
        median.append(chosen)
    scale = sum(median)
    return to_u16_weights([m / scale for m in median] if scale else median)


class Copier:
    def __init__(self, client: TrainingRunClient, run_id: int, blobs: IpfsClient, first_window: int,
                 modes: list[str], log: Path) -> None:
        self.client, self.run_id, self.blobs, self.modes, self.log_path = client, run_id, blobs, modes, log
        self.me = client.address_of_account
        self.next_window = first_window
        self.first_epoch = first_window // client.get_run(run_id).windows_per_epoch
        self.ballots: dict[int, tuple[list[int], bytes]] = {}  # epoch → (committed vector, salt)
        self.done: set[int] = set()  # epochs this copier has given up on or finished

    def log(self, **fields: Any) -> None:
        with self.log_path.open("a") as out:
            out.write(json.dumps(fields, sort_keys=True) + "\n")

    def step(self) -> None:
        self.republish()
        run = self.client.get_run(self.run_id)
        epoch = run.next_epoch
        if epoch >= self.first_epoch and epoch not in self.done:
            self.vote(epoch, self.modes[(epoch - self.first_epoch) % len(self.modes)])

    def republish(self) -> None:
        """Publish the next window as soon as an honest validator did: its canonical model, else the first one."""
        pubs = self.client.publications(self.run_id, self.next_window)
        others = {v: p for v, p in pubs.items() if v.lower() != self.me.lower()}
        if not others:
            return
        canonical = self.client.canonical_model(self.run_id, self.next_window).cid
        source = next((p for p in others.values() if p.model_cid == canonical), next(iter(others.values())))
        self.client.publish_window(self.run_id, self.next_window, source.model_cid, source.model_cid)
        self.next_window += 1

    def reveal_own_reports(self, epoch: int, mode: str) -> None:
        """Reveal the "reports" this copier sealed for `epoch` (the model CIDs it republished)."""
        per_epoch = self.client.get_run(self.run_id).windows_per_epoch
        mine = [self.client.publications(self.run_id, w, reports=False)[self.me].model_cid
                for w in range(epoch * per_epoch, (epoch + 1) * per_epoch)]
        self.attempt(epoch, mode, "reveal its reports", [], lambda: self.client.reveal_reports(
            self.run_id, epoch, mine))

    def vote(self, epoch: int, mode: str) -> None:
        block = self.client.block_number() + 1
        state = self.client.settlement_of(self.run_id, epoch)
        per_epoch = self.client.get_run(self.run_id).windows_per_epoch
        if block < state.opens_at or self.next_window < (epoch + 1) * per_epoch:
            return  # not yet, or its copies of the epoch's windows are not all out (the contract would refuse)
        revealed = [(r.weights, self.client.voting_stake(self.run_id, r.validator, epoch))
                    for r in self.client.revealed_weights(self.run_id, epoch) if r.validator.lower() != self.me.lower()]
        slots = len(self.client.trainers(self.run_id))
        ballot = self.client.ballot_of(self.run_id, self.me)
        committed = ballot.epoch == epoch and ballot.status != CommitStatus.NONE
        if mode == "guess" and not committed and state.commits_open(block):
            self.commit(epoch, mode, [1] * slots)
        elif mode == "report" and not committed and block < state.closes_at:
            vector = self.vector_from_reports(epoch)
            if vector is not None:  # readable only once the commit phase is over: the commit is refused
                self.commit(epoch, mode, vector)
                self.done.add(epoch)
        elif mode == "lagged" and not committed and state.commits_open(block):
            self.commit(epoch, mode, self.previous_consensus(epoch, slots))
        elif mode == "lagged" and committed and state.reveals_open(block):
            vector, salt = self.ballots[epoch]
            self.reveal_own_reports(epoch, mode)
            self.attempt(epoch, mode, "reveal", vector, lambda: self.client.reveal_weights(
                self.run_id, epoch, vector, salt))
            self.done.add(epoch)
        elif revealed and mode in ("wait", "guess"):
            median = revealed_median(revealed, slots)
            if mode == "wait":
                salt = secrets.token_bytes(32)
                self.attempt(epoch, mode, "commit the median", median,
                             lambda: self.client.commit_weights(self.run_id, epoch, median, salt))
            else:
                _, salt = self.ballots.get(epoch, ([], secrets.token_bytes(32)))
                self.attempt(epoch, mode, "reveal the median", median,
                             lambda: self.client.reveal_weights(self.run_id, epoch, median, salt))
            self.done.add(epoch)
        elif block >= state.closes_at:
            self.log(epoch=epoch, mode=mode, action="gave up", result="the epoch closed first", vector=[])
            self.done.add(epoch)

    def commit(self, epoch: int, mode: str, vector: list[int]) -> None:
        salt = secrets.token_bytes(32)
        self.ballots[epoch] = (vector, salt)
        self.attempt(epoch, mode, "commit", vector,
                     lambda: self.client.commit_weights(self.run_id, epoch, vector, salt))

    def attempt(self, epoch: int, mode: str, action: str, vector: list[int], send: Any) -> None:
        try:
            send()
            result = "accepted"
        except ContractReverted as err:
            result = f"reverted {err.error_name}"
        except TransactionFailed as err:
            result = f"failed {err}"[:200]
        self.log(epoch=epoch, mode=mode, action=action, result=result, vector=vector)

    def vector_from_reports(self, epoch: int) -> list[int] | None:
        """An honest validator's ballot for `epoch`, rebuilt from the reports it published (validator/
        settlement.py's own arithmetic); None while they are sealed."""
        per_epoch = self.client.get_run(self.run_id).windows_per_epoch
        windows = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        reports = []
        for window in windows:
            pubs = [p for v, p in self.client.publications(self.run_id, window).items()
                    if v.lower() != self.me.lower()]
            pub = min(pubs, key=lambda p: p.validator.lower())
            if pub.report_cid is None:
                return None
            reports.append(WindowReport.from_json(self.blobs.cat(pub.report_cid, REPORT_MAX_BYTES)))
        return weight_vector(epoch_weights(reports), self.client.trainers(self.run_id))

    def previous_consensus(self, epoch: int, slots: int) -> list[int]:
        """The consensus of the last finalised epoch before `epoch` (public on chain), else uniform."""
        if epoch > 0 and self.client.epoch_info(self.run_id, epoch - 1).finalized:
            vector = [self.client.consensus_weight(self.run_id, epoch - 1, i) for i in range(slots)]
            if any(vector):
                return vector
        return [1] * slots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployment", type=Path, required=True)
    parser.add_argument("--ipfs-api", required=True)
    parser.add_argument("--first-window", type=int, required=True)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["wait"])
    parser.add_argument("--log", type=Path, required=True, help="JSON lines: every attempt and the chain's answer")
    args = parser.parse_args(argv)
    deployment = read_deployment(args.deployment)
    client = chain_client(deployment.rpc_url, deployment.address, os.environ[COPIER_KEY_ENV], deployment.block)
    copier = Copier(client, deployment.run_id, IpfsClient(args.ipfs_api, timeout=30.0), args.first_window,
                    args.modes, args.log)
    stop = threading.Event()
    while not stop.is_set():
        try:
            copier.step()
        except TrainmarketError as err:  # a transient chain or IPFS failure: try again on the next poll
            print(f"retrying: {err}", file=sys.stderr, flush=True)
        stop.wait(0.3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
