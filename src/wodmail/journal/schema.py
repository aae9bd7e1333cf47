"""The journal's SQLite schema and its migrations.

`PRAGMA user_version` says which migrations a journal file has had. Opening a journal runs
the missing ones in order, in one transaction each, so a journal written by an older wodmail
is brought up to date in place (nothing is copied or lost). A migration is appended, never
edited: a journal on disk may already have run it.
"""

from __future__ import annotations

import sqlite3

BASE = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    verb TEXT,
    student INTEGER,
    student_max INTEGER,
    customer INTEGER,
    email TEXT,
    workshop TEXT,
    content TEXT,
    mode TEXT,
    message_id TEXT,
    dedup_key TEXT,
    peer TEXT,
    envelope_from TEXT,
    sender TEXT,
    subject TEXT,
    reason TEXT,
    received_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '{}',
    raw BLOB
);
CREATE INDEX IF NOT EXISTS orders_message_id ON orders (message_id);
CREATE INDEX IF NOT EXISTS orders_dedup ON orders (dedup_key, received_at);
CREATE INDEX IF NOT EXISTS orders_state ON orders (state);
CREATE INDEX IF NOT EXISTS orders_student ON orders (student);
"""

# Each entry brings a journal from user_version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    # 1: every run of an order (first run, restart, `wodmail retry`) keeps its own entry:
    # [{"attempt", "started_at", "finished_at", "outcome", "reason", "retries"}, ...];
    # refusals per peer are counted and capped through a partial index.
    """
    ALTER TABLE orders ADD COLUMN attempt_log TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX IF NOT EXISTS orders_refused_peer ON orders (peer, id) WHERE state = 'rejected';
    CREATE INDEX IF NOT EXISTS orders_finished ON orders (finished_at);
    """,
    # 2: steps an order has done, so that a re-run skips those a participant or a peer
    # has seen (see steps.Steps); one row per order and step name.
    """
    CREATE TABLE IF NOT EXISTS steps (
        job_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at REAL,
        finished_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (job_id, name)
    );
    """,
    # 3: `raw` keeps at most the first store.RAW_KEPT_BYTES of a mail; how many bytes were
    # left out (0 for the rows written before: they were kept whole).
    """
    ALTER TABLE orders ADD COLUMN raw_omitted INTEGER NOT NULL DEFAULT 0;
    """,
)
VERSION = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> None:
    """Creates the schema, or brings an older journal up to `VERSION` (autocommit `conn`)."""
    if version(conn) >= VERSION and _has_orders(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(BASE):
            conn.execute(statement)
        for number in range(version(conn), VERSION):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _has_orders(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='orders'")
    return row.fetchone() is not None


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
