"""The validator's read-only HTTP face: JSON endpoints over the persisted state, Prometheus metrics and a
dashboard page (static HTML + vanilla JS, no CDN). Loopback only; nothing here mutates state.

A window's scores (its report, contributions, rejections, the ratings they moved) are served only once this
validator has revealed its reports of the window's epoch on chain, or the epoch is settled
(`ValidatorStore.public_before`): before that they would let another validator rebuild its weight ballot
without evaluating (contracts/README.md, the weight-copier row). The loss curve is served at once: anyone
holding the published model can compute it.

Endpoints are plain `def` so FastAPI runs the blocking SQLite reads in its threadpool, off the event loop.
Swagger/ReDoc pages are disabled because they load their assets from a CDN; /openapi.json stays."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from base.errors import TrainmarketError
from base.paths import state_dir
from base.process import LOOPBACK
from validator.store import ValidatorStore

STATIC_DIR = Path(__file__).resolve().parent / "static"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
log = logging.getLogger(__name__)

# The validator loop, run in a thread while the app serves; it must return soon after `stop` is set.
BackgroundLoop = Callable[[threading.Event], None]


class ServiceStartError(TrainmarketError):
    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host, self.port = host, port
        super().__init__(f"validator service on {host}:{port} did not start: {reason}")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINMARKET_VALIDATOR_")

    host: str = LOOPBACK
    port: int = Field(default=8700, ge=0, le=65535)
    db_path: Path = Field(default_factory=lambda: state_dir() / "validator" / "state.sqlite3")
    max_request_bytes: int = Field(default=64 * 1024, ge=0)
    rejections_limit: int = Field(default=200, ge=1, le=10_000)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the validator service binds loopback only, not {host!r}")
        return host


# -- response models -----------------------------------------------------------------------------------------


class HealthView(BaseModel):
    status: Literal["ok", "degraded"]
    schema_version: int
    last_processed_window: int | None
    unpublished_windows: list[int]
    loop: Literal["absent", "running", "stopped", "failed"]
    loop_error: str | None = Field(default=None, description="Why the validator loop ended, if it failed")


class ContributionView(BaseModel):
    window: int
    trainer: str
    cid: str | None
    status: Literal["scored", "rejected"]
    reason: str | None
    detail: str | None
    rank: int | None
    s: float | None
    b: float | None
    B: float | None
    mu: float | None
    sigma: float | None
    ordinal: float | None
    sync: float | None
    penalty: float | None
    final: float | None
    weight: float | None


class WindowView(BaseModel):
    window: int
    status: Literal["pending", "scored", "published"]
    global_loss: float | None
    model_cid: str | None
    report_cid: str | None
    publish_tx_hash: str | None
    report: dict[str, Any] | None = Field(description="The window's evaluation report as stored (JSON object)")
    contributions: list[ContributionView]


class RatingView(BaseModel):
    mu: float
    sigma: float
    B: float
    misses: int
    last_window: int


class RewardView(BaseModel):
    epoch: int
    amount_wei: str = Field(description="Decimal string: wei amounts exceed JSON's safe integer range")


class TrainerView(BaseModel):
    address: str
    rating: RatingView | None
    history: list[ContributionView]
    total_weight: float
    rewards: list[RewardView]
    total_rewards_wei: str


class LeaderboardEntry(BaseModel):
    trainer: str
    mu: float
    sigma: float
    B: float
    ordinal: float
    misses: int
    last_window: int
    windows_scored: int
    windows_rejected: int
    total_weight: float
    rewards_wei: str


class LossPoint(BaseModel):
    window: int
    loss: float


class RejectionView(BaseModel):
    window: int
    trainer: str
    cid: str | None
    reason: str
    detail: str | None


# -- metrics -------------------------------------------------------------------------------------------------


class StoreCollector(Collector):
    """Metrics read from the store at scrape time, so they survive restarts and need no bookkeeping."""

    def __init__(self, store: ValidatorStore) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        counts = self.store.counts()
        windows = CounterMetricFamily("trainmarket_validator_windows_processed", "Windows scored")
        windows.add_metric([], counts["windows_processed"])
        published = CounterMetricFamily("trainmarket_validator_windows_published", "Windows published on chain")
        published.add_metric([], counts["windows_published"])
        scored = CounterMetricFamily("trainmarket_validator_contributions_scored", "Contributions scored")
        scored.add_metric([], counts["contributions_scored"])
        rejected = CounterMetricFamily(
            "trainmarket_validator_contributions_rejected", "Contributions rejected", labels=["reason"]
        )
        for reason, count in sorted(counts["rejections_by_reason"].items()):
            rejected.add_metric([reason], count)
        yield from (windows, published, scored, rejected)
        history = self.store.loss_history()
        if history:
            loss = GaugeMetricFamily("trainmarket_validator_global_loss", "Loss of the latest global model")
            loss.add_metric([], history[-1][1])
            last = GaugeMetricFamily("trainmarket_validator_last_window", "Latest window with a global loss")
            last.add_metric([], history[-1][0])
            yield from (loss, last)


# -- app -----------------------------------------------------------------------------------------------------


@dataclass
class LoopState:
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    @property
    def name(self) -> Literal["absent", "running", "stopped", "failed"]:
        if self.thread is None:
            return "absent"
        if self.thread.is_alive():
            return "running"
        # The loop only ends on shutdown; ending before it (an error, or a bug's traceback) is a failure.
        return "stopped" if self.stop.is_set() and self.error is None else "failed"


def _run_loop(loop: BackgroundLoop, state: LoopState) -> None:
    try:
        loop(state.stop)
    except TrainmarketError as err:
        # The service keeps serving the stored state; /health reports the failure.
        state.error = str(err)
        log.error("validator loop stopped: %s", err)
        return
    if not state.stop.is_set():
        state.error = "the loop returned before shutdown"


def create_app(
    store: ValidatorStore, settings: ServiceSettings, background: BackgroundLoop | None = None
) -> FastAPI:
    """The service over `store`; `background` (the validator loop) runs in a thread for the app's lifetime."""
    loop_state = LoopState()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if background is not None:
            loop_state.thread = threading.Thread(
                target=_run_loop, args=(background, loop_state), name="validator-loop", daemon=True
            )
            loop_state.thread.start()
        try:
            yield
        finally:
            loop_state.stop.set()
            if loop_state.thread is not None:
                loop_state.thread.join(timeout=30)

    app = FastAPI(
        title="trainmarket validator", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(store))

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if len(str(request.url)) > MAX_URL_BYTES:
            return JSONResponse({"detail": "request URL too long"}, status_code=414)
        if sum(len(name) + len(value) for name, value in request.headers.raw) > MAX_HEADER_BYTES:
            # uvicorn's own header limit applies only when a request arrives in pieces; this one always does.
            return JSONResponse({"detail": "request headers too large"}, status_code=431)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > settings.max_request_bytes):
            return JSONResponse({"detail": "request body too large"}, status_code=413)
        if "transfer-encoding" in request.headers:
            # A chunked body declares no length, so the cap above cannot see it: no endpoint takes a body anyway.
            return JSONResponse({"detail": "a request body must declare its Content-Length"}, status_code=411)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/health")
    def health() -> HealthView:
        unpublished = store.unpublished_windows()
        return HealthView(
            status="degraded" if loop_state.name == "failed" else "ok",
            schema_version=store.schema_version(),
            last_processed_window=store.last_processed_window(),
            unpublished_windows=unpublished,
            loop=loop_state.name,
            loop_error=loop_state.error,
        )

    @app.get("/windows/{window}", responses={404: {"description": "Window not recorded"},
                                             403: {"description": "Window's report still sealed"}})
    def window_report(window: Annotated[int, PathParam(ge=0)]) -> WindowView:
        stored = store.window_report(window)
        if stored is None:
            raise HTTPException(status_code=404, detail=f"window {window} has not been recorded")
        if window >= store.public_before():
            raise HTTPException(status_code=403, detail=f"window {window}'s report is sealed until its epoch's "
                                                        "reports are revealed on chain")
        return WindowView.model_validate(stored)

    @app.get("/trainers/{address}", responses={404: {"description": "Trainer never seen"}})
    def trainer(address: Annotated[str, PathParam(pattern=ADDRESS_PATTERN)]) -> TrainerView:
        key = address.lower()
        before = store.public_before()
        history = store.trainer_history(key, before)
        rating = next((entry for entry in store.leaderboard(before) if entry["trainer"] == key), None)
        if rating is None and not history:
            raise HTTPException(status_code=404, detail=f"trainer {address} has no contributions")
        rewards = store.trainer_rewards(key)
        return TrainerView(
            address=key,
            rating=RatingView.model_validate(rating) if rating else None,
            history=[ContributionView.model_validate(row) for row in history],
            total_weight=sum(row["weight"] or 0.0 for row in history),
            rewards=[RewardView(epoch=r["epoch"], amount_wei=str(r["amount_wei"])) for r in rewards],
            total_rewards_wei=str(sum(r["amount_wei"] for r in rewards)),
        )

    @app.get("/leaderboard")
    def leaderboard() -> list[LeaderboardEntry]:
        return [
            LeaderboardEntry.model_validate({**entry, "rewards_wei": str(entry["rewards_wei"])})
            for entry in store.leaderboard(store.public_before())
        ]

    @app.get("/loss")
    def loss_history() -> list[LossPoint]:
        return [LossPoint(window=w, loss=loss) for w, loss in store.loss_history()]

    @app.get("/rejections")
    def rejections(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[RejectionView]:
        limit = min(limit, settings.rejections_limit)
        return [RejectionView.model_validate(row) for row in store.rejections(limit, store.public_before())]

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# -- running it ----------------------------------------------------------------------------------------------


def _config(app: FastAPI, settings: ServiceSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", server_header=False, access_log=False
    )


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app with uvicorn on loopback until interrupted (blocks)."""
    uvicorn.Server(_config(app, settings)).run()


@contextmanager
def running_service(app: FastAPI, settings: ServiceSettings, start_timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` in a background thread; yields its base URL and stops the server on exit."""
    server = uvicorn.Server(_config(app, settings))
    thread = threading.Thread(target=server.run, name="validator-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive():
            raise ServiceStartError(settings.host, settings.port, "the server thread exited (port in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise ServiceStartError(settings.host, settings.port, "not listening in time")
        time.sleep(0.02)
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
