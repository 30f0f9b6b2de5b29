"""The validator's per-window round: chain and IPFS I/O around the pure `ScoringStrategy`.

The chain is the clock: the loop polls the block number and processes window w once its reveal period is
over, strictly in window order. Per window:
  gather inputs (window_inputs.py) → score (pure) → model to IPFS → model/state files → record the window
  and its report in SQLite (one transaction) → publish the model CID and the sealed report on chain (at most
  once: contracts/sending.py, journalled in the store by tx_journal.py; the report stays off IPFS until it is
  revealed: sealed_reports.py).
Per epoch, once its windows are published and its last reveal period is over: settlement.py commits the
epoch's weight vector, reveals the epoch's reports then the vector, finalizes the epoch when the contract
allows, and records the rewards; once it is settled, disputes.py audits the peers' ballots of it against their
own reports and disputes those that do not follow.

Crash safety: a window already recorded is never rescored; a recorded but unpublished window is published
from what was stored; the outer optimiser state and the current model live in safetensors files beside the
DB, keyed by window, so the state a restart loads is the one of the last recorded window."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from base.errors import TrainmarketError, is_temporary
from base.model import build_model, evaluate_loss
from base.report import RejectReason, WindowReport
from base.run_config import RunConfig
from contracts.client import TrainingRunClient
from contracts.errors import TransactionFailed
from contracts.sending import Once, receipt_hash
from contracts.types import CommitStatus
from validator import canonical
from validator.aggregate import MedianNormClipMean
from validator.disputes import BallotDisputes
from validator.domain import ParamDict, ValidatorError
from validator.sealed_reports import ReportRevealer, sealed_report_cid
from validator.settlement import EpochSettler
from validator.store import TX_PUBLISH, RatingRecord, ValidatorStore, WindowRecord
from validator.strategy import Evaluate, ScoringStrategy, StrategyConfig, ValidatorState
from validator.timing import StageClock, instrument, split_scoring, timed
from validator.tx_journal import StoreTxJournal
from validator.window_inputs import (
    GatheredWindow,
    RunContext,
    gather_window,
    monitor_batch,
    sorted_params,
)

log = logging.getLogger(__name__)

# Fixed so that two validators (and an auditor) sum floats in the same order. One thread: on the shared 2-core
# machine (load average 7.8-9.2) evaluating a tiny-model contribution took 15-28 ms with 1 thread and 129-514 ms
# with 2 (`python -m bench.threads`, bench/results/threads.json, rounds alternated): a parallel region waits for
# its descheduled second thread. A validator scales out with processes instead (torchrun, validator/distributed.py).
EVAL_THREADS = 1
KEEP_STATE_FILES = 3


class LoopError(ValidatorError):
    """The loop's own records disagree (a state file is missing or does not match its report)."""


def configure_determinism(threads: int = EVAL_THREADS) -> None:
    """Same inputs → same floats → same CIDs across validators: fixed thread count, deterministic kernels."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_strategy(config: RunConfig, device: torch.device | str = "cpu", evaluate: Evaluate | None = None
                   ) -> ScoringStrategy:
    """The pipeline every validator of the run uses (and the audit rebuilds), configured from the run config.
    `evaluate` replaces how the evaluation runs, never what it computes (validator/distributed.py)."""
    return ScoringStrategy(
        build_model(config),
        aggregator=MedianNormClipMean(lr=config.outer_lr, momentum=config.outer_momentum),
        config=StrategyConfig(eval_step_size=config.eval_step_size),
        device=device,
        evaluate=evaluate,
    )


def initial_model(ctx: RunContext) -> tuple[str, ParamDict]:
    """(CID, params) of the run's initial model: fetched when the config names it, else built from the seed."""
    if ctx.config.initial_model_cid:
        data = ctx.blobs.cat(ctx.config.initial_model_cid, ctx.config.max_model_bytes)
        return ctx.config.initial_model_cid, ctx.payloads.decode_model(data, ctx.spec, ctx.config.max_model_bytes)
    params = sorted_params(dict(build_model(ctx.config).named_parameters()))
    return ctx.blobs.add(ctx.payloads.encode_initial_model(params)), params


class ValidatorLoop:
    """One validator account's rounds over one run. `step()` does the next piece of due work; `run()` polls."""

    def __init__(self, ctx: RunContext, client: TrainingRunClient, store: ValidatorStore, work_dir: Path,
                 device: torch.device | str = "cpu", start_window: int = 0, evaluate: Evaluate | None = None
                 ) -> None:
        self.ctx = ctx
        self.client = client
        self.store = store
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.strategy = build_strategy(ctx.config, self.device, evaluate)
        self.stages = StageClock()  # seconds per stage of each window, stored with it (validator/timing.py)
        instrument(self.strategy, self.stages)
        self.txs = StoreTxJournal(store)
        if store.get_value("start_window") is None:
            store.set_value("start_window", str(start_window))
        self.start_window = int(store.get_value("start_window") or 0)
        init = store.get_value("initial_model_cid")
        if init is None:
            init, _ = initial_model(ctx)
            store.set_value("initial_model_cid", init)
        self.initial_cid = init
        reports = ReportRevealer(client, ctx.run_id, store, self.txs, ctx.blobs, self.report_bytes)
        self.settler = EpochSettler(client, ctx.run_id, store, self.txs, self.start_window, self.stored_report,
                                    reports)
        self.disputes = BallotDisputes(ctx, client, self.txs)
        self.monitor_batch = monitor_batch(ctx.dataset, ctx.config)
        # Adopting the canonical model fetches it from IPFS: timed as the window's fetch stage.
        self.fetch_model = timed(canonical.ModelFetcher(ctx), self.stages, "fetch")

    # -- the clock ---------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, poll_seconds: float = 0.5) -> None:
        """Work until `stop` is set; waits between polls only when nothing was due. An unreachable chain or
        IPFS daemon is waited out (the step is retried from the stored state); any other error ends the run."""
        while not stop.is_set():
            try:
                busy = self.step()
            except TrainmarketError as err:
                if not is_temporary(err):
                    raise
                log.warning("retrying after a transient failure: %s", err)
                busy = False
            if not busy:
                stop.wait(poll_seconds)

    def step(self) -> bool:
        """Finish an unpublished window, else settle a due epoch, else process the next due window.

        Settling comes before scoring: an epoch's weights are only accepted until the contract's grace period
        ends (then it is finalised without them), while a window can be scored late. A validator catching up
        after a restart thus submits each epoch as soon as that epoch's windows are published."""
        for window in self.store.unpublished_windows():
            self.publish(window)
            return True
        # Before settling: this validator disputes the last settled epoch's failing ballots before it votes on the
        # next epoch, whose settlement closes the dispute period (validator/disputes.py).
        if self.disputes.step():
            return True
        began = time.perf_counter()
        if self.settler.settle():
            self.record_weights_seconds(time.perf_counter() - began)
            return True
        window = self.next_window()
        due = self.client.block_number() >= self.client.window_bounds(self.ctx.run_id, window).reveal_end
        if due and canonical.ready(self.ctx, window):
            self.process_window(window)
            return True
        return False

    def next_window(self) -> int:
        last = self.store.last_processed_window()
        return self.start_window if last is None else last + 1

    # -- one window --------------------------------------------------------------------------------------

    def stored_report(self, window: int) -> WindowReport:
        stored = self.store.window_report(window)
        report = stored.report() if stored else None
        if report is None:
            raise LoopError(f"window {window} has no stored report")
        return report

    def report_bytes(self, window: int) -> bytes:
        """The window's report as its CID is sealed and, later, revealed."""
        return self.stored_report(window).to_json().encode()

    def process_window(self, window: int) -> WindowReport:
        """Score `window` and record it (then publish). A window already recorded is only published."""
        began = time.perf_counter()
        if self.store.begin_window(window) in ("scored", "published"):
            self.publish(window)
            return self.stored_report(window)
        previous = self.store.last_processed_window()
        state, own_params = self.load_state(previous)
        own_cid = self.initial_cid if previous is None else self.stored_report(previous).model_cid or ""
        base = canonical.window_base(self.ctx, window, self.initial_cid, own_cid, own_params, self.fetch_model)
        # Written with the window, in one transaction: the base it adopted, if any (bench.faults.consensus lists
        # the adopters), and what it scored (bench.load).
        notes: dict[str, str] = {}
        if base.adopted:
            notes[f"window:{window}:adopted_base"] = json.dumps({"canonical": base.cid, "own": own_cid})
        base_cid, params = base.cid, base.params
        gathered = gather_window(self.ctx, window, base_cid, params, base.accepted, self.stages)
        self.report_missed(window, gathered)
        self.report_unavailable(window, gathered)
        scoring = time.perf_counter()
        report, new_params, new_state = self.strategy.score_window(gathered.inputs, state)
        scoring = time.perf_counter() - scoring
        new_model = sorted_params(new_params)
        with self.stages.stage("publish"):
            model_cid = self.ctx.blobs.add(self.ctx.payloads.encode_model(new_model, window, base_cid))
        report = WindowReport(**{**_shallow(report), "model_cid": model_cid})
        self.save_state(window, new_state, new_model)
        loss = self.global_loss(new_model)
        notes[f"window:{window}:stats"] = json.dumps(
            {"revealed": gathered.reveal_count, "well_formed": gathered.well_formed, "scored": len(report.scores),
             "unscored": unscored_reasons(report)})
        self.store.record_window(WindowRecord.of(report, self.rating_rows(report, new_state), loss, notes))
        log.info("window %d scored: %d contributions, %d rejections, model %s", window, len(report.scores),
                 len(report.rejections), model_cid)
        with self.stages.stage("publish"):
            self.publish(window, report)
        self.record_seconds(window, time.perf_counter() - began, scoring)
        return report

    def record_seconds(self, window: int, total: float, scoring: float) -> None:
        """Where the window's seconds went (bench.load reads them): the stages, and `other` for the rest (chain
        reads, state files, the held-out loss, the database)."""
        seconds = split_scoring(self.stages.take(), scoring)
        seconds["other"] = round(max(0.0, total - sum(seconds.values())), 3)
        self.store.set_value(f"window:{window}:seconds", json.dumps({**seconds, "total": round(total, 3)}))

    def record_weights_seconds(self, seconds: float) -> None:
        """Each settlement step's seconds (submitting an epoch's weights, finalising it), appended."""
        done = json.loads(self.store.get_value("weights_seconds") or "[]")
        self.store.set_value("weights_seconds", json.dumps([*done, round(seconds, 3)]))

    def rating_rows(self, report: WindowReport, state: ValidatorState) -> list[RatingRecord]:
        """The ratings the window changed: every trainer scored in it, and every rated trainer that missed a
        reveal in it (its miss count changed); misses = missed windows within the reliability horizon."""
        missed_now = {r.trainer for r in report.rejections if r.reason == RejectReason.MISSING_REVEAL}
        return [
            RatingRecord(trainer, state.ratings[trainer].mu, state.ratings[trainer].sigma,
                         state.binary_avg.get(trainer, 0.0), len(state.missed_windows.get(trainer, ())))
            for trainer in sorted({s.trainer for s in report.scores} | (missed_now & set(state.ratings)))
        ]

    def global_loss(self, params: ParamDict) -> float:
        """Held-out loss of the window's new global model on the run's fixed monitoring batch."""
        model = self.strategy.model
        model.load_state_dict(params, strict=False)
        return evaluate_loss(model, self.monitor_batch)

    def report_missed(self, window: int, gathered: GatheredWindow) -> None:
        """Tell the contract about missed reveals (it counts and slashes them); someone else may have done it.
        All of the window's reports go out together (contracts.sending.send_batch)."""
        def report(trainers: list[str]) -> list[bool]:
            return self.client.report_missed_reveals(self.ctx.run_id, window, trainers,
                                                     skip=("AlreadyRevealed", "NoCommitment"))

        trainers = list(gathered.missed_reveals)
        landed = report(trainers)
        # Not ours: refused at estimation (another validator's report is pending, or landed), or another's report
        # landed first in the same block (ours reverted). The chain must say missed once that report is mined:
        # give it a few blocks, then report again ourselves.
        unsettled = [t for t, ok in zip(trainers, landed, strict=True) if not ok]
        unsettled = self._still_committed(window, unsettled, wait_blocks=3)
        if unsettled:
            report(unsettled)
        for trainer in self._still_committed(window, unsettled, wait_blocks=3):
            raise TransactionFailed("reportMissedReveal", "", f"window {window}: {trainer} is still unreported")

    def _still_committed(self, window: int, trainers: list[str], wait_blocks: int) -> list[str]:
        """Those of `trainers` the chain still shows as committed in `window`, after waiting up to `wait_blocks`
        new blocks (at most 2 s each; none come under automine, where every report is mined at once)."""
        def committed() -> list[str]:
            return [t for t in trainers
                    if self.client.commitment_of(self.ctx.run_id, window, t)[1] == CommitStatus.COMMITTED]

        left = committed()
        start = self.client.block_number()
        deadline = time.monotonic() + 2.0 * wait_blocks
        while left and time.monotonic() < deadline and self.client.block_number() < start + wait_blocks:
            time.sleep(0.2)
            left = committed()
        return left

    def report_unavailable(self, window: int, gathered: GatheredWindow) -> None:
        """Tell the contract which revealed payloads nobody served before the fetch deadline (validator/fetch.py);
        a stake majority of such reports makes the reveal a miss. All of them go out together, as the missed
        reveals do (one block for the lot, not one each). Refusals that mean "settled already" (another quorum
        got there, the trainer's slot moved on) or "not ours to report" (this validator does not vote on the
        window's epoch) are expected, and so is a report that reverts on chain because another landed first."""
        trainers = list(gathered.unavailable)
        landed = self.client.report_unavailable_all(
            self.ctx.run_id, window, trainers, skip=("AlreadyReported", "NotRevealed", "NoCommitment", "NotEligible"))
        for trainer, ok in zip(trainers, landed, strict=True):
            if not ok:
                log.info("window %d: unavailability report on %s refused or raced", window, trainer)

    def publish(self, window: int, recorded: WindowReport | None = None) -> None:
        """Put the window's model on IPFS (idempotent: same bytes, same CID) and its CID on chain with the sealed
        report's commitment; the report's bytes are in the store already, its CID computed but not added.
        `recorded`: the report just recorded (its JSON is the stored one), else it is read from the store."""
        report = recorded or self.stored_report(window)
        if report.model_cid is None:
            raise LoopError(f"window {window} was recorded without its model CID")
        _, params = self.load_state(window)
        data = self.ctx.payloads.encode_model(params, window, report.inputs.base_model_cid)
        model_cid = self.ctx.blobs.add(data)
        if model_cid != report.model_cid:
            raise LoopError(f"window {window}: stored model encodes to {model_cid}, report says {report.model_cid}")
        report_cid = sealed_report_cid(self.ctx.blobs, report.to_json().encode())
        me = self.client.address_of_account.lower()

        def done() -> bool:
            return any(v.lower() == me for v in self.client.publications(self.ctx.run_id, window, reports=False))

        receipt = self.client.publish_window(self.ctx.run_id, window, model_cid, report_cid,
                                             once=Once(self.txs, TX_PUBLISH, str(window), done))
        tx_hash = receipt_hash(receipt) if receipt is not None else "(published earlier)"
        self.store.mark_published(window, model_cid, report_cid, tx_hash)
        log.info("window %d published: model %s report %s", window, model_cid, report_cid)

    # -- state files -------------------------------------------------------------------------------------

    def _paths(self, window: int) -> tuple[Path, Path, Path]:
        stem = self.work_dir / f"window-{window:08d}"
        return stem.with_suffix(".model.safetensors"), stem.with_suffix(".state.safetensors"), \
            stem.with_suffix(".state.json")

    def save_state(self, window: int, state: ValidatorState, params: ParamDict) -> None:
        model_path, tensor_path, json_path = self._paths(window)
        plain, tensors = state.to_parts()
        _atomic_safetensors(model_path, params)
        _atomic_safetensors(tensor_path, tensors)
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(plain, sort_keys=True))
        tmp.replace(json_path)
        for old in sorted(self.work_dir.glob("window-*.safetensors")) + sorted(self.work_dir.glob("window-*.json")):
            number = int(old.name.split(".")[0].removeprefix("window-"))
            if number < window - KEEP_STATE_FILES:
                old.unlink(missing_ok=True)

    def load_state(self, window: int | None) -> tuple[ValidatorState, ParamDict]:
        """The state and global model after `window` (None: before any window — fresh state, initial model)."""
        if window is None:
            data = self.ctx.blobs.cat(self.initial_cid, self.ctx.config.max_model_bytes)
            params = self.ctx.payloads.decode_model(data, self.ctx.spec, self.ctx.config.max_model_bytes)
            return ValidatorState(), sorted_params(params)
        model_path, tensor_path, json_path = self._paths(window)
        try:
            plain = json.loads(json_path.read_text())
            tensors = load_file(str(tensor_path)) if tensor_path.stat().st_size else {}
            params = load_file(str(model_path))
        except (OSError, ValueError) as err:
            raise LoopError(f"state files of window {window} in {self.work_dir} are unreadable: {err}") from err
        return ValidatorState.from_parts(plain, tensors), sorted_params(params)


def unscored_reasons(report: WindowReport) -> dict[str, int]:
    """Revealed contributions the window did not score, counted by the reason of their rejection (a committed
    trainer that never revealed is not a revealed contribution). With the scored ones they account for every
    reveal: bench.load checks that nothing revealed went unscored without a reason."""
    scored = {s.trainer for s in report.scores}
    reasons: dict[str, str] = {}
    for r in report.rejections:
        if r.reason != RejectReason.MISSING_REVEAL and r.trainer not in scored:
            reasons.setdefault(r.trainer, r.reason.value)
    return dict(sorted(Counter(reasons.values()).items()))


def _shallow(report: WindowReport) -> dict[str, Any]:
    return {name: getattr(report, name) for name in report.__dataclass_fields__}


def _atomic_safetensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
