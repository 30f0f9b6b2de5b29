"""The validator service, running: uvicorn on a free loopback port over a real store, called with httpx."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from base.errors import TrainmarketError
from base.process import free_port
from validator.service import ServiceSettings, create_app, running_service
from validator.store import ValidatorStore

TRAINERS = ["0x" + digit * 40 for digit in "1234"]
LOSSES = [4.0, 3.6, 3.3, 3.1, 2.95]


def seed_store(store: ValidatorStore, public_before: int = len(LOSSES)) -> None:
    """Five windows: trainers 1-3 scored every window (1 best), trainer 4 rejected twice then absent; the scores
    of windows before `public_before` are served (their epochs' reports are revealed)."""
    for window, loss in enumerate(LOSSES):
        scores: list[dict[str, Any]] = [
            {
                "trainer": trainer, "cid": f"bafk{window}{rank}", "s": 0.1 / rank, "b": 1.0, "B": 0.05 * window,
                "mu": 25.0 + window / rank, "sigma": 8.0 - window * 0.3, "ordinal": 2.0 * window / rank,
                "sync": 1.0, "final": 0.1 / rank, "weight": [0.5, 0.3, 0.2][rank - 1],
            }
            for rank, trainer in enumerate(TRAINERS[:3], start=1)
        ]
        rejections = (
            [{"trainer": TRAINERS[3], "cid": f"bafkcopy{window}", "reason": "copy_of_earlier",
              "detail": f"cosine 0.99 with {TRAINERS[0]}"}]
            if window < 2 else []
        )
        ratings: dict[str, dict[str, Any]] = {
            row["trainer"]: {"mu": row["mu"], "sigma": row["sigma"], "B": row["B"]} for row in scores
        }
        if window < 2:
            ratings[TRAINERS[3]] = {"mu": 20.0, "sigma": 8.3, "B": 0.0, "misses": window + 1}
        store.record_window(
            window, json.dumps({"window": window, "scores": scores}), scores, rejections, ratings, loss
        )
    store.mark_published(0, "bafymodel0", "bafyreport0", "0x" + "ab" * 32)
    store.record_rewards(0, {TRAINERS[0]: 3 * 10**20, TRAINERS[1]: 10**20})
    store.make_public_before(public_before)


@pytest.fixture
def seeded_store(tmp_path: Path) -> Iterator[ValidatorStore]:
    with ValidatorStore(tmp_path / "service.sqlite3") as store:
        seed_store(store)
        yield store


def service_settings(tmp_path: Path, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(port=free_port(), db_path=tmp_path / "service.sqlite3", **overrides)


@pytest.fixture
def base_url(seeded_store: ValidatorStore, tmp_path: Path) -> Iterator[str]:
    settings = service_settings(tmp_path, max_request_bytes=1024)
    with running_service(create_app(seeded_store, settings), settings) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "schema_version": 1, "last_processed_window": 4, "unpublished_windows": [1, 2, 3, 4],
        "loop": "absent", "loop_error": None,
    }


def test_window_report(client: httpx.Client) -> None:
    body = client.get("/windows/0").json()
    assert body["status"] == "published"
    assert (body["model_cid"], body["report_cid"]) == ("bafymodel0", "bafyreport0")
    assert body["report"]["window"] == 0
    assert [c["trainer"] for c in body["contributions"]] == TRAINERS
    assert body["contributions"][0]["rank"] == 1 and body["contributions"][0]["weight"] == 0.5
    assert body["contributions"][3]["reason"] == "copy_of_earlier"
    assert client.get("/windows/4").json()["status"] == "scored"


@pytest.mark.parametrize(("path", "status"), [("/windows/5", 404), ("/windows/-1", 422), ("/windows/x", 422)])
def test_window_errors(client: httpx.Client, path: str, status: int) -> None:
    assert client.get(path).status_code == status


def test_trainer_history_and_rewards(client: httpx.Client) -> None:
    checksummed = "0x" + "1" * 40  # digits only: same in every case; also try upper-case hex below
    body = client.get(f"/trainers/{checksummed}").json()
    assert body["address"] == TRAINERS[0]
    assert [row["window"] for row in body["history"]] == [0, 1, 2, 3, 4]
    assert all(row["rank"] == 1 for row in body["history"])
    assert body["total_weight"] == pytest.approx(2.5)
    assert body["rating"]["mu"] == pytest.approx(29.0)
    assert body["rewards"] == [{"epoch": 0, "amount_wei": str(3 * 10**20)}]
    assert body["total_rewards_wei"] == str(3 * 10**20)
    rejected = client.get(f"/trainers/{TRAINERS[3]}").json()
    assert [row["reason"] for row in rejected["history"]] == ["copy_of_earlier"] * 2
    assert rejected["rating"]["misses"] == 2


@pytest.mark.parametrize(
    ("address", "status"),
    [
        ("0x" + "AbCdEf" * 6 + "abcd", 404),  # well-formed, mixed case, never seen
        ("0x" + "1" * 39, 422),
        ("0x" + "1" * 41, 422),
        ("1" * 42, 422),
        ("0x" + "g" * 40, 422),
    ],
)
def test_trainer_errors(client: httpx.Client, address: str, status: int) -> None:
    assert client.get(f"/trainers/{address}").status_code == status


def test_scores_of_windows_whose_reports_are_sealed_are_not_served(tmp_path: Path) -> None:
    """Until a window's epoch has its reports revealed on chain, its scores would let another validator build its
    ballot without evaluating: the window, its rejections and the ratings it moved are withheld; the loss (any
    holder of the published model can compute it) is not."""
    with ValidatorStore(tmp_path / "service.sqlite3") as store:
        seed_store(store, public_before=2)
        settings = service_settings(tmp_path)
        with running_service(create_app(store, settings), settings) as url, httpx.Client(base_url=url) as http:
            assert http.get("/windows/1").status_code == 200
            sealed = http.get("/windows/2")
            assert sealed.status_code == 403 and "sealed" in sealed.json()["detail"]
            history = http.get(f"/trainers/{TRAINERS[0]}").json()
            assert [row["window"] for row in history["history"]] == [0, 1]
            assert history["rating"]["mu"] == pytest.approx(26.0) and history["total_weight"] == pytest.approx(1.0)
            board = {entry["trainer"]: entry for entry in http.get("/leaderboard").json()}
            assert board[TRAINERS[0]]["mu"] == pytest.approx(26.0) and board[TRAINERS[0]]["last_window"] == 1
            assert board[TRAINERS[0]]["windows_scored"] == 2
            assert len(http.get("/loss").json()) == len(LOSSES)
            store.make_public_before(1)  # never moves back
            assert http.get("/windows/1").status_code == 200
            assert [r["window"] for r in http.get("/rejections").json()] == [1, 0]


def test_leaderboard_loss_and_rejections(client: httpx.Client) -> None:
    board = client.get("/leaderboard").json()
    assert [entry["trainer"] for entry in board] == TRAINERS
    assert board[0]["ordinal"] == pytest.approx(8.0)
    assert board[0]["rewards_wei"] == str(3 * 10**20) and board[3]["windows_rejected"] == 2
    assert client.get("/loss").json() == [{"window": w, "loss": loss} for w, loss in enumerate(LOSSES)]
    rejections = client.get("/rejections", params={"limit": 1}).json()
    assert rejections == [{
        "window": 1, "trainer": TRAINERS[3], "cid": "bafkcopy1", "reason": "copy_of_earlier",
        "detail": f"cosine 0.99 with {TRAINERS[0]}",
    }]
    assert client.get("/rejections", params={"limit": 0}).status_code == 422


def test_metrics(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = set(response.text.splitlines())
    assert "trainmarket_validator_windows_processed_total 5.0" in lines
    assert "trainmarket_validator_windows_published_total 1.0" in lines
    assert "trainmarket_validator_contributions_scored_total 15.0" in lines
    assert 'trainmarket_validator_contributions_rejected_total{reason="copy_of_earlier"} 2.0' in lines
    assert "trainmarket_validator_global_loss 2.95" in lines


def test_openapi_schema(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/health", "/windows/{window}", "/trainers/{address}", "/leaderboard", "/loss", "/rejections"
    }
    assert all(set(item) == {"get"} for item in schema["paths"].values())
    components = schema["components"]["schemas"]
    for model in ("HealthView", "WindowView", "TrainerView", "LeaderboardEntry", "LossPoint", "RejectionView"):
        assert model in components
    ok = schema["paths"]["/trainers/{address}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TrainerView"}
    address = schema["paths"]["/trainers/{address}"]["get"]["parameters"][0]["schema"]
    assert address["pattern"] == "^0x[0-9a-fA-F]{40}$"
    assert "404" in schema["paths"]["/windows/{window}"]["get"]["responses"]
    board = schema["paths"]["/leaderboard"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert board["items"] == {"$ref": "#/components/schemas/LeaderboardEntry"}
    assert set(components["ContributionView"]["properties"]) >= {"s", "b", "B", "mu", "sigma", "final", "weight"}


def test_read_only_and_hardened(client: httpx.Client) -> None:
    assert client.post("/leaderboard", json={}).status_code == 405
    assert client.delete("/windows/0").status_code == 405
    assert client.post("/leaderboard", content=b"x" * 4096).status_code == 413
    assert client.get("/docs").status_code == 404  # Swagger UI would load its assets from a CDN
    response = client.get("/leaderboard")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "server" not in response.headers


def test_dashboard_files_are_served(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text
    assert "http" not in page.text.replace('"http://www.w3.org', "")  # nothing from another origin
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "fetch(" in script.text and "innerHTML" not in script.text
    assert client.get("/static/style.css").status_code == 200


def test_background_loop_runs_with_the_app(tmp_path: Path) -> None:
    entered = threading.Event()

    def loop(stop: threading.Event) -> None:
        with ValidatorStore(tmp_path / "service.sqlite3") as writer:  # the loop's own connection
            writer.record_window(0, "{}", [], [], {}, global_loss=1.5)
            entered.set()
            stop.wait()
            writer.set_value("loop_stopped_cleanly", "yes")

    with ValidatorStore(tmp_path / "service.sqlite3") as store:
        settings = service_settings(tmp_path)
        with running_service(create_app(store, settings, background=loop), settings) as url:
            assert entered.wait(timeout=30)
            health = httpx.get(f"{url}/health", timeout=10).json()
            assert (health["loop"], health["last_processed_window"]) == ("running", 0)
            assert httpx.get(f"{url}/loss", timeout=10).json() == [{"window": 0, "loss": 1.5}]
        assert store.get_value("loop_stopped_cleanly") == "yes"


def crash_with_a_bug(stop: threading.Event) -> None:
    raise ZeroDivisionError("a bug, not a TrainmarketError")


def return_early(stop: threading.Event) -> None:
    return


def fail_on_purpose(stop: threading.Event) -> None:
    raise TrainmarketError("chain unreachable")


@pytest.mark.parametrize(
    ("loop", "error"),
    [
        (fail_on_purpose, "chain unreachable"),
        (return_early, "the loop returned before shutdown"),
        pytest.param(
            crash_with_a_bug, None,
            marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
        ),
    ],
)
def test_failed_loop_degrades_health(
    tmp_path: Path, loop: Callable[[threading.Event], None], error: str | None
) -> None:
    with ValidatorStore(tmp_path / "service.sqlite3") as store:
        settings = service_settings(tmp_path)
        app = create_app(store, settings, background=loop)
        with running_service(app, settings) as url:
            for _ in range(500):  # the loop thread ends right away; poll until /health has seen it
                health = httpx.get(f"{url}/health", timeout=10).json()
                if health["loop"] != "running":
                    break
            assert (health["status"], health["loop"], health["loop_error"]) == ("degraded", "failed", error)


def test_settings_refuse_non_loopback_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="loopback only"):
        ServiceSettings(host="0.0.0.0")
    monkeypatch.setenv("TRAINMARKET_VALIDATOR_PORT", "9123")
    monkeypatch.setenv("TRAINMARKET_VALIDATOR_DB_PATH", "/tmp/v.sqlite3")
    settings = ServiceSettings()
    assert (settings.host, settings.port, settings.db_path) == ("127.0.0.1", 9123, Path("/tmp/v.sqlite3"))
