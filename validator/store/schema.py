"""The SQLite schema of the validator's state file, its version check, and the one place where the domain's
field names meet the column names.

Column names differ from validator.domain.ContributionScore's field names for one reason: `b` (this window's
indicator, `b_i`) and `B` (its moving average, `binary_avg`) differ only in case, which SQLite column names
ignore. SCORE_COLUMNS maps each stored score field to its column; nothing outside this package sees columns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from validator.store.errors import SchemaVersionError

SCHEMA_VERSION = 1

# ContributionScore field → contributions column, in column order (the scores stored beside rank and penalty).
SCORE_COLUMNS: dict[str, str] = {
    "s_i": "s",
    "b_i": "b_indicator",
    "binary_avg": "b_average",
    "mu": "mu",
    "sigma": "sigma",
    "ordinal": "ordinal",
    "sync": "sync",
    "final": "final",
    "weight": "weight",
}

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE windows (
    window INTEGER PRIMARY KEY CHECK (window >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'scored', 'published')),
    global_loss REAL,
    report_json TEXT,
    report_cid TEXT,
    model_cid TEXT,
    publish_tx_hash TEXT,
    scored_at REAL,
    published_at REAL
);
CREATE TABLE contributions (
    window INTEGER NOT NULL REFERENCES windows(window),
    trainer TEXT NOT NULL,
    cid TEXT,
    status TEXT NOT NULL CHECK (status IN ('scored', 'rejected')),
    reason TEXT,
    detail TEXT,
    rank INTEGER,
    s REAL, b_indicator REAL, b_average REAL, mu REAL, sigma REAL,
    ordinal REAL, sync REAL, penalty REAL, final REAL, weight REAL,
    PRIMARY KEY (window, trainer),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
CREATE INDEX contributions_by_trainer ON contributions (trainer, window);
CREATE INDEX contributions_by_status ON contributions (status, window);
CREATE TABLE ratings (
    trainer TEXT PRIMARY KEY,
    mu REAL NOT NULL,
    sigma REAL NOT NULL,
    b_average REAL NOT NULL,
    misses INTEGER NOT NULL DEFAULT 0 CHECK (misses >= 0),
    last_window INTEGER NOT NULL
);
CREATE TABLE epochs (
    epoch INTEGER PRIMARY KEY CHECK (epoch >= 0),
    weights_json TEXT NOT NULL,
    submit_tx_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('submitted')),
    submitted_at REAL NOT NULL
);
CREATE TABLE rewards (
    epoch INTEGER NOT NULL,
    trainer TEXT NOT NULL,
    amount_wei TEXT NOT NULL,
    PRIMARY KEY (epoch, trainer)
);
CREATE TABLE pending_txs (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    nonce INTEGER NOT NULL CHECK (nonce >= 0),
    status TEXT NOT NULL CHECK (status IN ('sent', 'confirmed')),
    attempts INTEGER NOT NULL DEFAULT 1,
    sent_at REAL NOT NULL,
    confirmed_at REAL,
    PRIMARY KEY (kind, key)
);
"""


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a fresh file; refuse a file of a version this code does not understand. Runs inside
    the caller's transaction."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    found = int(row["value"]) if row else 0
    if found > SCHEMA_VERSION or found < 1:
        raise SchemaVersionError(path, found, SCHEMA_VERSION)
