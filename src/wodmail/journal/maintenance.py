"""What an admin does to orders in the journal: retry, cancel, prune, and the per-peer cap
on refusals. Each function runs inside one write transaction on `conn` (the CLI's or the
daemon's writer), so a `wodmail cancel` and the daemon starting that order cannot both win.

How the CLI reaches a running daemon: through the journal only. `retry` puts the order back
in the `accepted` state; the daemon looks for accepted orders it does not hold every
`dispatch.queue_poll_seconds` (and at once on SIGUSR1). `cancel` moves an accepted order to
`cancelled`; the daemon starts an order only if it is still accepted or running
(`Journal.mark_running`), so a cancelled one is skipped when its turn comes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from wodmail.errors import WodmailError
from wodmail.journal import attempts

FINISHED = ("done", "failed", "rejected", "cancelled")
RETRYABLE = ("failed", "cancelled")


class NotAllowed(WodmailError):
    """The order is not in a state that allows what was asked."""


def _state(conn: sqlite3.Connection, job_id: int) -> tuple[str, str | None, str]:
    row = conn.execute(
        "SELECT state, reason, attempt_log FROM orders WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None:
        raise NotAllowed(f"no job {job_id}")
    return row[0], row[1], row[2] or "[]"


def requeue(conn: sqlite3.Connection, job_id: int, now: float) -> None:
    """`wodmail retry`: a failed (or cancelled) order runs again as a new attempt."""
    state, reason, log = _state(conn, job_id)
    if state not in RETRYABLE:
        raise NotAllowed(_why_not_retry(job_id, state, reason))
    entries = attempts.requested(json.loads(log), "retry", now)
    conn.execute(
        "UPDATE orders SET state = 'accepted', reason = NULL, finished_at = NULL,"
        " attempt_log = ? WHERE id = ?",
        (json.dumps(entries), job_id),
    )


def _why_not_retry(job_id: int, state: str, reason: str | None) -> str:
    if state == "rejected":
        return f"job {job_id} was refused ({reason}): there is no order to run; send it again"
    if state == "done":
        return f"job {job_id} is done: only a failed or cancelled order can be retried"
    return f"job {job_id} is {state} already"


def cancel(conn: sqlite3.Connection, job_id: int, now: float) -> None:
    """`wodmail cancel`: an accepted order that has not started will not run."""
    state, _reason, _log = _state(conn, job_id)
    if state != "accepted":
        detail = " (it can no longer be stopped safely)" if state == "running" else ""
        raise NotAllowed(
            f"job {job_id} is {state}{detail}: only an accepted order that has not started"
            " can be cancelled"
        )
    conn.execute(
        "UPDATE orders SET state = 'cancelled', reason = 'cancelled by an admin',"
        " finished_at = ? WHERE id = ?",
        (now, job_id),
    )


@dataclass
class Pruned:
    by_state: dict[str, int] = field(default_factory=dict)
    over_peer_cap: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_state.values()) + self.over_peer_cap


def finished_before(conn: sqlite3.Connection, before: float) -> dict[str, int]:
    """How many orders of each finished state finished before `before` (what prune deletes)."""
    marks = ",".join("?" * len(FINISHED))
    rows = conn.execute(
        f"SELECT state, COUNT(*) FROM orders WHERE state IN ({marks}) AND finished_at < ?"
        " GROUP BY state",
        (*FINISHED, before),
    ).fetchall()
    return {state: count for state, count in rows}


def prune(conn: sqlite3.Connection, before: float, refusals_per_peer: int) -> Pruned:
    """Deletes finished orders and refusals finished before `before`, then caps the refusals
    kept per peer. Accepted and running orders are never touched."""
    pruned = Pruned(by_state=finished_before(conn, before))
    marks = ",".join("?" * len(FINISHED))
    conn.execute(
        f"DELETE FROM orders WHERE state IN ({marks}) AND finished_at < ?", (*FINISHED, before)
    )
    # The steps recorded for the orders deleted go with them (resume state of done orders).
    conn.execute("DELETE FROM steps WHERE job_id NOT IN (SELECT id FROM orders)")
    if refusals_per_peer > 0:
        peers = conn.execute(
            "SELECT peer FROM orders WHERE state = 'rejected' GROUP BY peer HAVING COUNT(*) > ?",
            (refusals_per_peer,),
        ).fetchall()
        for (peer,) in peers:
            pruned.over_peer_cap += cap_refusals(conn, peer, refusals_per_peer)
    # The step records of the orders deleted (ids are never reused: AUTOINCREMENT).
    conn.execute("DELETE FROM steps WHERE job_id NOT IN (SELECT id FROM orders)")
    return pruned


def cap_refusals(conn: sqlite3.Connection, peer: str | None, keep: int) -> int:
    """Keeps only the newest `keep` refusals from `peer`; returns how many were deleted.
    A flood of refused mail from one client cannot grow the journal without bound."""
    if keep <= 0:
        return 0
    row = conn.execute(
        "SELECT id FROM orders WHERE state = 'rejected' AND peer IS ? ORDER BY id DESC"
        " LIMIT 1 OFFSET ?",
        (peer, keep),
    ).fetchone()
    if row is None:
        return 0
    cursor = conn.execute(
        "DELETE FROM orders WHERE state = 'rejected' AND peer IS ? AND id <= ?", (peer, row[0])
    )
    return cursor.rowcount
