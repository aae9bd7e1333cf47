"""The outbox: relayed mail, held durably until it is delivered or given up.

A relayed mail is committed to the outbox (SQLite, `state_dir/outbox.sqlite3`, mode 0600,
`synchronous=FULL`) before its 250. The message itself is kept only while it is
undelivered: once delivered or given up, only its envelope, subject and outcome remain.
The outbox runs with a rollback journal and `secure_delete`, so a credentials mail's text is
overwritten in the file, not left in free pages or a write-ahead log. No message text is
ever logged.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    received_at REAL NOT NULL,
    peer TEXT,
    mail_from TEXT NOT NULL,
    recipients TEXT NOT NULL,
    pending TEXT NOT NULL,
    delivered TEXT NOT NULL DEFAULT '[]',
    subject TEXT,
    message_id TEXT,
    size INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    outcome TEXT NOT NULL DEFAULT '',
    finished_at REAL,
    message BLOB
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
"""
QUEUED, SENT, FAILED = "queued", "sent", "failed"
STATES = (QUEUED, SENT, FAILED)
PUBLIC_COLUMNS = (
    "id, state, received_at, peer, mail_from, recipients, pending, delivered, subject, "
    "message_id, size, attempts, next_attempt_at, last_error, outcome, finished_at"
)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def _public(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    for key in ("recipients", "pending", "delivered"):
        data[key] = json.loads(data[key])
    for key in ("received_at", "next_attempt_at", "finished_at"):
        if data[key] is not None:
            data[key] = datetime.fromtimestamp(data[key], UTC).isoformat()
    if data["state"] != QUEUED:
        data["next_attempt_at"] = None
    return data


class Outbox:
    """The outbox file. Not thread-safe: `Relay` calls it from one thread only."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._conn = _connect(path)
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def add(
        self, *, message: bytes, subject: str | None, message_id: str | None, mail_from: str,
        recipients: list[str], peer: str | None, received_at: float,
    ) -> int:
        """Queues `message` (as it will be sent), due at once; returns its id."""
        cursor = self._conn.execute(
            "INSERT INTO outbox (state, received_at, peer, mail_from, recipients, pending, "
            "subject, message_id, size, next_attempt_at, message) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (QUEUED, received_at, peer, mail_from, json.dumps(recipients),
             json.dumps(recipients), subject, message_id, len(message), received_at, message),
        )
        return int(cursor.lastrowid or 0)

    def retry_all_now(self, now: float) -> int:
        """A start is a retry point: every queued mail is due at once."""
        cursor = self._conn.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE state = ?", (now, QUEUED)
        )
        return cursor.rowcount

    def due(self, now: float) -> list[sqlite3.Row]:
        return self._conn.execute(
            "SELECT * FROM outbox WHERE state = ? AND next_attempt_at <= ? ORDER BY id",
            (QUEUED, now),
        ).fetchall()

    def defer_due(self, until: float, now: float, give_up_seconds: float) -> int:
        """Mail due now waits until `until` (or its own give-up time, if sooner)."""
        cursor = self._conn.execute(
            "UPDATE outbox SET next_attempt_at = min(?, received_at + ?) "
            "WHERE state = ? AND next_attempt_at <= ?",
            (until, give_up_seconds, QUEUED, now),
        )
        return cursor.rowcount

    def next_due(self) -> float | None:
        row = self._conn.execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE state = ?", (QUEUED,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def update(self, mail_id: int, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        self._conn.execute(
            f"UPDATE outbox SET {columns} WHERE id = ?", (*values.values(), mail_id)
        )


def list_outbox(
    path: Path, *, states: list[str] | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The outbox as `wodmail relay` shows it, newest first; never the message text."""
    if not path.exists():
        return []
    query = f"SELECT {PUBLIC_COLUMNS} FROM outbox"
    params: list[Any] = []
    if states:
        query += f" WHERE state IN ({','.join('?' * len(states))})"
        params.extend(states)
    query += " ORDER BY id DESC"
    if limit is not None:
        query += " LIMIT ?"
        params.append(limit)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    try:
        return [_public(row) for row in conn.execute(query, params)]
    finally:
        conn.close()


def prune_outbox(path: Path, before: float) -> int:
    """Deletes mail finished (sent or failed) before `before`; queued mail is never touched."""
    if not path.exists():
        return 0
    conn = _connect(path)
    try:
        cursor = conn.execute(
            "DELETE FROM outbox WHERE state != ? AND finished_at < ?", (QUEUED, before)
        )
        return cursor.rowcount
    finally:
        conn.close()
