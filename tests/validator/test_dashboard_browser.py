"""The dashboard in a real headless Chromium (Debian package `chromium`): the page's JS fetches the running
service's JSON endpoints and renders the leaderboard, rewards, rejections and an SVG loss chart.

Chromium is installed by `make setup`; without it this test fails, unless TRAINMARKET_SKIP_BROWSER=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from base.process import free_port
from tests.validator.test_service import LOSSES, TRAINERS, seed_store
from validator.service import ServiceSettings, create_app, running_service
from validator.store import ValidatorStore

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_binary() -> str:
    override = os.environ.get("TRAINMARKET_CHROMIUM")
    candidates = (override,) if override else CHROMIUM_CANDIDATES
    for candidate in candidates:
        if shutil.which(candidate):
            return candidate
    if os.environ.get("TRAINMARKET_SKIP_BROWSER") == "1":
        pytest.skip("chromium not installed and TRAINMARKET_SKIP_BROWSER=1")
    pytest.fail(
        f"headless Chromium not found (looked for {', '.join(candidates)}): "
        "run `make setup` (apt-get install -y chromium) or set TRAINMARKET_SKIP_BROWSER=1 to skip the browser test"
    )


class DomIndex(HTMLParser):
    """Collects, from the dumped DOM, the text of every table row by table id and the chart's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.body: dict[str, str | None] = {}
        self.svg: dict[str, str | None] = {}
        self.polyline_points = ""
        self.circles = 0
        self.status_text = ""
        self._table: str | None = None
        self._in_tbody = False
        self._cell: list[str] | None = None
        self._in_status = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "body":
            self.body = attributes
        elif tag == "table":
            self._table = attributes.get("id")
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody and self._table:
            self.rows.setdefault(self._table, []).append([])
        elif tag == "td" and self._in_tbody and self._table:
            self._cell = []
        elif tag == "svg" and attributes.get("id") == "loss-svg":
            self.svg = attributes
        elif tag == "polyline":
            self.polyline_points = attributes.get("points") or ""
        elif tag == "circle":
            self.circles += 1
        elif tag == "p" and attributes.get("id") == "status":
            self._in_status = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table:
            self.rows[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._in_tbody = False
        elif tag == "table":
            self._table = None
        elif tag == "p":
            self._in_status = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_status:
            self.status_text += data


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    with ValidatorStore(tmp_path / "dashboard.sqlite3") as store:
        seed_store(store)
        settings = ServiceSettings(port=free_port(), db_path=tmp_path / "dashboard.sqlite3")
        with running_service(create_app(store, settings), settings) as url:
            yield url


def dump_dom(chromium: str, url: str, profile: Path, window_size: str = "") -> str:
    argv = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        # Virtual time lets the page's fetches and rendering finish before the DOM is dumped, without a sleep.
        "--virtual-time-budget=10000", *([f"--window-size={window_size}"] if window_size else []), "--dump-dom", url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def test_dashboard_renders_in_headless_chromium(dashboard_url: str, tmp_path: Path) -> None:
    chromium = chromium_binary()
    dom = DomIndex()
    dom.feed(dump_dom(chromium, f"{dashboard_url}/", tmp_path / "profile"))

    assert dom.body.get("data-state") == "ready", f"page did not load its data: {dom.status_text!r}"
    assert "last processed window: 4" in dom.status_text

    leaderboard = dom.rows.get("leaderboard", [])
    assert [row[1] for row in leaderboard] == TRAINERS
    assert [row[0] for row in leaderboard] == ["1", "2", "3", "4"]
    assert leaderboard[0][2] == "8.000"  # ordinal of the best trainer, 3 decimals

    rewards = {row[0]: row for row in dom.rows.get("rewards", [])}
    assert rewards[TRAINERS[0]][2] == str(3 * 10**20)
    assert rewards[TRAINERS[3]][2] == "0"

    rejections = dom.rows.get("rejections", [])
    detail = f"cosine 0.99 with {TRAINERS[0]}"
    assert [row[:4] for row in rejections] == [
        ["1", TRAINERS[3], "copy_of_earlier", detail], ["0", TRAINERS[3], "copy_of_earlier", detail]
    ]

    assert dom.svg.get("data-points") == str(len(LOSSES))
    points = [tuple(float(v) for v in pair.split(",")) for pair in dom.polyline_points.split()]
    assert len(points) == len(LOSSES) and dom.circles == len(LOSSES)
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # windows left to right
    assert ys == sorted(ys)  # falling loss is drawn lower and lower: SVG y grows downwards


def test_rejections_with_real_cids_fit_a_1280px_window(tmp_path: Path) -> None:
    """Real rejections carry 59-character CIDs, 42-character addresses and long filter details, none of which
    a browser may break on its own: the page must still fit 1280 px without a horizontal scrollbar."""
    chromium = chromium_binary()
    cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    rejections = [
        {"trainer": "0x" + "9" * 40, "cid": cid, "reason": "copy_of_earlier",
         "detail": f"top-k index overlap 0.97 and cosine 0.993 with {TRAINERS[0]}'s contribution {cid} of window 4"},
        {"trainer": "0x" + "8" * 40, "cid": cid, "reason": "malformed", "detail": "payload_is_not_safetensors_" * 6},
    ]
    with ValidatorStore(tmp_path / "wide.sqlite3") as store:
        seed_store(store)
        store.record_window(5, json.dumps({"window": 5, "scores": []}), [], rejections, {}, 2.9)
        store.make_public_before(6)
        settings = ServiceSettings(port=free_port(), db_path=tmp_path / "wide.sqlite3")
        with running_service(create_app(store, settings), settings) as url:
            dom = DomIndex()
            dom.feed(dump_dom(chromium, f"{url}/", tmp_path / "profile", window_size="1280,900"))
    assert dom.body.get("data-state") == "ready", dom.status_text
    assert [row[4] for row in dom.rows["rejections"][:2]] == [cid, cid]  # the whole CID is there, wrapped
    assert dom.body.get("data-fits") == "true", "the dashboard needs a horizontal scrollbar at 1280 px"
