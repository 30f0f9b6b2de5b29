"""ValidatorStore on a real SQLite file: round trips, atomicity (including a SIGKILL mid-write), pending-tx
bookkeeping and the schema version check."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from base.report import ContributionScore, Rejection, RejectReason
from validator.store import (
    SCHEMA_VERSION,
    TX_PUBLISH,
    TX_SUBMIT_WEIGHTS,
    InvalidRecordError,
    SchemaVersionError,
    StoreError,
    StoreWriteError,
    TxStateError,
    UnknownWindowError,
    ValidatorStore,
    WindowAlreadyRecordedError,
)

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20


def score(trainer: str, s: float, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trainer": trainer, "cid": f"bafk{trainer[2:10]}", "s": s, "b": 1.0, "B": 0.05, "mu": 25.0 + s,
        "sigma": 8.0, "ordinal": 1.0 + s, "sync": 1.0, "final": max(0.0, s), "weight": 0.5,
    }
    row.update(overrides)
    return row


def rating(mu: float, **overrides: Any) -> dict[str, Any]:
    return {"mu": mu, "sigma": 8.0, "B": 0.05, "misses": 0, **overrides}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ValidatorStore]:
    with ValidatorStore(tmp_path / "state.sqlite3") as opened:
        yield opened


def record_simple(store: ValidatorStore, window: int, loss: float = 3.0) -> None:
    store.record_window(
        window,
        json.dumps({"window": window, "note": "report"}),
        [score(ALICE, 0.2), score(BOB, 0.1)],
        [{"trainer": CAROL, "cid": None, "reason": "missing_reveal"}],
        {ALICE: rating(26.0), BOB: rating(25.5), CAROL: rating(24.0, misses=1)},
        global_loss=loss,
    )


def test_fresh_store_is_empty_and_versioned(store: ValidatorStore) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    assert store.last_processed_window() is None
    assert store.ratings() == {}
    assert store.window_report(0) is None
    assert store.leaderboard() == []


def test_record_window_round_trip(store: ValidatorStore) -> None:
    record_simple(store, 0, loss=3.5)
    record_simple(store, 1, loss=3.25)

    report = store.window_report(1)
    assert report is not None
    assert report["status"] == "scored"
    assert report["report"] == {"window": 1, "note": "report"}
    assert report["global_loss"] == 3.25
    by_trainer = {row["trainer"]: row for row in report["contributions"]}
    assert by_trainer[ALICE]["rank"] == 1 and by_trainer[BOB]["rank"] == 2
    assert by_trainer[ALICE]["s"] == pytest.approx(0.2)
    assert by_trainer[ALICE]["B"] == pytest.approx(0.05) and by_trainer[ALICE]["b"] == 1.0
    assert by_trainer[CAROL]["status"] == "rejected" and by_trainer[CAROL]["reason"] == "missing_reveal"

    assert store.last_processed_window() == 1
    assert store.get_value("processed_through_window") == "1"
    assert store.loss_history() == [(0, 3.5), (1, 3.25)]
    assert store.ratings()[CAROL]["misses"] == 1
    assert store.ratings()[ALICE]["last_window"] == 1
    assert [row["window"] for row in store.trainer_history(ALICE)] == [0, 1]
    assert store.rejections(limit=1) == [
        {"window": 1, "trainer": CAROL, "cid": None, "reason": "missing_reveal", "detail": None}
    ]
    board = store.leaderboard()
    assert [entry["trainer"] for entry in board] == [ALICE, BOB, CAROL]
    assert board[0]["windows_scored"] == 2 and board[0]["total_weight"] == pytest.approx(1.0)
    assert board[2]["windows_rejected"] == 2
    # sealed windows' contributions are not counted in the metrics (they would tell who was rejected)
    assert store.counts() == {
        "windows_processed": 2, "windows_published": 0, "contributions_scored": 0, "rejections_by_reason": {},
    }
    store.make_public_before(2)
    assert store.counts() == {
        "windows_processed": 2, "windows_published": 0, "contributions_scored": 4,
        "rejections_by_reason": {"missing_reveal": 2},
    }


def test_addresses_are_case_insensitive(store: ValidatorStore) -> None:
    mixed = "0x" + "Ab" * 20
    store.record_window(0, "{}", [score(mixed, 0.3)], [], {mixed: rating(25.0)}, global_loss=2.0)
    assert store.trainer_history(mixed.upper().replace("0X", "0x"))[0]["trainer"] == mixed.lower()
    assert list(store.ratings()) == [mixed.lower()]


def test_ties_share_a_rank_and_explicit_ranks_win(store: ValidatorStore) -> None:
    store.record_window(
        0, "{}", [score(ALICE, 0.1), score(BOB, 0.1), score(CAROL, 0.3)], [], {}, global_loss=1.0
    )
    ranks = {row["trainer"]: row["rank"] for row in store.trainer_history(ALICE) + store.trainer_history(BOB)}
    assert ranks == {ALICE: 2, BOB: 2}
    store.record_window(1, "{}", [score(ALICE, 0.1, rank=7)], [], {}, global_loss=1.0)
    assert store.trainer_history(ALICE)[-1]["rank"] == 7


def test_a_window_is_never_scored_twice(store: ValidatorStore) -> None:
    store.begin_window(4)
    assert store.window_status(4) == "pending"
    assert store.last_processed_window() is None
    record_simple(store, 4)
    with pytest.raises(WindowAlreadyRecordedError):
        record_simple(store, 4)


@pytest.mark.parametrize(
    ("scores", "problem"),
    [
        ([score(ALICE, float("nan"))], "not finite"),
        ([score(ALICE, 0.1, weight=float("inf"))], "not finite"),
        ([{k: v for k, v in score(ALICE, 0.1).items() if k != "B"}], "missing B"),
        ([score(ALICE, 0.1, final="1")], "must be a number"),
        ([score("", 0.1)], "trainer must be"),
    ],
)
def test_invalid_rows_are_refused_before_writing(
    store: ValidatorStore, scores: list[dict[str, Any]], problem: str
) -> None:
    with pytest.raises(InvalidRecordError, match=problem):
        store.record_window(0, "{}", scores, [], {}, global_loss=1.0)
    assert store.window_status(0) is None


def test_report_must_be_json(store: ValidatorStore) -> None:
    with pytest.raises(InvalidRecordError, match="not JSON"):
        store.record_window(0, "{not json", [], [], {}, global_loss=1.0)


def test_failure_mid_transaction_leaves_nothing(store: ValidatorStore) -> None:
    record_simple(store, 0)
    before = (store.ratings(), store.counts(), store.get_value("processed_through_window"))
    # The rating's CHECK constraint fails on the last statement, after the window and its contributions
    # were already inserted inside the transaction.
    with pytest.raises(StoreWriteError, match="CHECK"):
        store.record_window(
            1, "{}", [score(ALICE, 0.4), score(BOB, 0.2)], [{"trainer": CAROL, "reason": "stale"}],
            {ALICE: rating(30.0), BOB: rating(20.0, misses=-1)}, global_loss=2.0,
        )
    assert store.window_status(1) is None
    assert store.trainer_history(ALICE)[-1]["window"] == 0
    assert (store.ratings(), store.counts(), store.get_value("processed_through_window")) == before
    # Duplicate trainer within one window: fails on the second contribution insert.
    with pytest.raises(StoreWriteError, match="UNIQUE"):
        store.record_window(1, "{}", [score(ALICE, 0.4), score(ALICE, 0.2)], [], {}, global_loss=2.0)
    assert store.window_status(1) is None
    record_simple(store, 1)  # the store is still usable
    assert store.last_processed_window() == 1


WRITER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from validator.store import ValidatorStore
    store = ValidatorStore(Path(sys.argv[1]))
    trainers = ["0x%040x" % i for i in range(200)]
    window = 0
    while True:
        scores = [dict(trainer=t, cid="c", s=i / 1000, b=1.0, B=0.1, mu=25.0, sigma=8.0, ordinal=1.0,
                       sync=1.0, final=0.1, weight=1 / 200) for i, t in enumerate(trainers)]
        ratings = {t: dict(mu=25.0 + window, sigma=8.0, B=0.1) for t in trainers}
        store.record_window(window, json.dumps({"n": len(trainers)}), scores, [], ratings, global_loss=1.0)
        print(window, flush=True)
        window += 1
    """
)


def test_sigkill_never_leaves_half_a_window(tmp_path: Path) -> None:
    db = tmp_path / "killed.sqlite3"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(3):  # let it commit a few windows, then kill it wherever it is
        assert child.stdout.readline().strip() != ""
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with ValidatorStore(db) as store:
        last = store.last_processed_window()
        assert last is not None and last >= 2
        for window in range(last + 1):
            report = store.window_report(window)
            assert report is not None and len(report["contributions"]) == 200
        assert store.window_report(last + 1) is None
        # Ratings always belong to the last committed window, never to a half-written one.
        assert {r["mu"] for r in store.ratings().values()} == {25.0 + last}


def test_pending_tx_lifecycle(tmp_path: Path) -> None:
    db = tmp_path / "tx.sqlite3"
    with ValidatorStore(db) as store:
        assert store.pending_tx(TX_PUBLISH, "3") is None
        store.record_pending_tx(TX_PUBLISH, "3", "0xaaa", nonce=7)
        store.record_pending_tx(TX_PUBLISH, "3", "0xbbb", nonce=7)  # gas bump replaces the hash
    with ValidatorStore(db) as store:  # a restart sees the tx that may be in flight
        pending = store.pending_tx(TX_PUBLISH, "3")
        assert pending is not None
        assert (pending.tx_hash, pending.nonce, pending.status, pending.attempts) == ("0xbbb", 7, "sent", 2)
        assert [tx.key for tx in store.unconfirmed_txs()] == ["3"]
        store.confirm_tx(TX_PUBLISH, "3")
        assert store.unconfirmed_txs() == []
        confirmed = store.pending_tx(TX_PUBLISH, "3")
        assert confirmed is not None and confirmed.status == "confirmed"
        with pytest.raises(TxStateError, match="already confirmed"):
            store.record_pending_tx(TX_PUBLISH, "3", "0xccc", nonce=8)
        with pytest.raises(TxStateError, match="never recorded"):
            store.confirm_tx(TX_PUBLISH, "4")


def test_mark_published_confirms_its_tx(store: ValidatorStore) -> None:
    with pytest.raises(UnknownWindowError):
        store.mark_published(0, "bafymodel", "bafyreport", "0xabc")
    record_simple(store, 0)
    record_simple(store, 1)
    store.record_pending_tx(TX_PUBLISH, "0", "0xabc", nonce=1)
    assert store.unpublished_windows() == [0, 1]
    store.mark_published(0, "bafymodel", "bafyreport", "0xabc")
    report = store.window_report(0)
    assert report is not None
    assert (report["status"], report["model_cid"], report["report_cid"], report["publish_tx_hash"]) == (
        "published", "bafymodel", "bafyreport", "0xabc"
    )
    tx = store.pending_tx(TX_PUBLISH, "0")
    assert tx is not None and tx.status == "confirmed"
    assert store.unpublished_windows() == [1]
    assert store.last_processed_window() == 1
    assert store.counts()["windows_published"] == 1


def test_epoch_submission_and_rewards(store: ValidatorStore) -> None:
    assert not store.epoch_submitted(0)
    store.record_pending_tx(TX_SUBMIT_WEIGHTS, "0", "0xfeed", nonce=3)
    store.record_epoch_submission(0, {ALICE.upper().replace("0X", "0x"): 0.75, BOB: 0.25}, "0xfeed")
    assert store.epoch_submitted(0)
    assert store.epoch_weights(0) == {ALICE: 0.75, BOB: 0.25}
    tx = store.pending_tx(TX_SUBMIT_WEIGHTS, "0")
    assert tx is not None and tx.status == "confirmed"
    with pytest.raises(StoreError, match="already submitted"):
        store.record_epoch_submission(0, {ALICE: 1.0}, "0xfeed2")
    with pytest.raises(InvalidRecordError):
        store.record_epoch_submission(1, {ALICE: float("nan")}, "0x1")
    assert not store.epoch_submitted(1)

    record_simple(store, 0)
    big = 10**24  # beyond int64: stored as text
    store.record_rewards(0, {ALICE: big, BOB: 5})
    store.record_rewards(1, {ALICE: 1})
    assert store.trainer_rewards(ALICE) == [{"epoch": 0, "amount_wei": big}, {"epoch": 1, "amount_wei": 1}]
    board = {entry["trainer"]: entry for entry in store.leaderboard()}
    assert board[BOB]["rewards_wei"] == 5


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.sqlite3"
    ValidatorStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(SchemaVersionError, match="newer version") as caught:
        ValidatorStore(db)
    assert caught.value.found == SCHEMA_VERSION + 1


def test_store_reopens_with_its_data(tmp_path: Path) -> None:
    db = tmp_path / "reopen.sqlite3"
    with ValidatorStore(db) as store:
        record_simple(store, 0)
        store.set_value("outer_optimizer_state", "runs/opt-0.safetensors")
    with ValidatorStore(db) as store:
        assert store.last_processed_window() == 0
        assert store.get_value("outer_optimizer_state") == "runs/opt-0.safetensors"
        assert store.schema_version() == SCHEMA_VERSION


def test_accepts_the_domain_dataclasses(store: ValidatorStore) -> None:
    score_fields: dict[str, Any] = {
        "trainer": ALICE, "cid": "bafkalice", "loss_before_own": 3.0, "loss_after_own": 2.5,
        "loss_before_random": 3.0, "loss_after_random": 2.8, "s_i": 0.0667, "own_gain": 0.167,
        "random_gain": 0.0667, "b_i": 1, "binary_avg": 0.05, "mu": 26.0, "sigma": 8.0, "ordinal": 2.0,
        "sync": 1.0, "penalty": 0.5, "final": 0.05, "weight": 1.0,
    }
    score = ContributionScore(**score_fields)
    rejection = Rejection(trainer=BOB, window=0, reason=RejectReason.STALE, detail="base model bafyold")
    store.record_window(0, "{}", [asdict(score)], [asdict(rejection)], {}, global_loss=3.0)
    report = store.window_report(0)
    assert report is not None
    alice, bob = report["contributions"]
    assert (alice["s"], alice["b"], alice["B"], alice["penalty"]) == (0.0667, 1.0, 0.05, 0.5)
    assert (bob["reason"], bob["cid"], bob["detail"]) == ("stale", None, "base model bafyold")
