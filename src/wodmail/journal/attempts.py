"""Attempts: each run of an order (first run, run after a restart, `wodmail retry`).

An order's record keeps one entry per attempt in `attempt_log`:
``{"attempt", "trigger", "requested_at", "started_at", "finished_at", "outcome", "reason",
"retries"}``, where `trigger` says what started it (`received`, `restart` after the daemon
stopped mid-run, `retry` by an admin) and `retries` counts the transient failures its steps
retried. These functions only compute entries; the journal stores them.
"""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]


def step_retries(result: dict[str, Any]) -> int:
    """Transient failures retried by the steps of one attempt's result."""
    steps = result.get("steps") or []
    return sum(max(int(step.get("attempts", 1)) - 1, 0) for step in steps if isinstance(step, dict))


def requested(log: list[Entry], trigger: str, now: float) -> list[Entry]:
    """The log with a new attempt asked for (not started yet)."""
    return [*log, {"attempt": len(log) + 1, "trigger": trigger, "requested_at": now}]


def started(log: list[Entry], now: float, previous_result: dict[str, Any]) -> list[Entry]:
    """The log once an attempt starts. A started attempt that never finished was interrupted
    (the daemon stopped or crashed): it is closed and this one is its restart."""
    log = [dict(entry) for entry in log]
    last = log[-1] if log else None
    if last is not None and last.get("started_at") is None and last.get("finished_at") is None:
        last["started_at"] = now
        return log
    if last is not None and last.get("finished_at") is None:
        last.update(finished_at=now, outcome="interrupted",
                    reason="the daemon stopped during this attempt",
                    retries=step_retries(previous_result))
        trigger = "restart"
    else:
        trigger = "received" if last is None else "again"
    log.append({"attempt": len(log) + 1, "trigger": trigger, "started_at": now})
    return log


def finished(
    log: list[Entry], now: float, outcome: str, reason: str | None, result: dict[str, Any]
) -> list[Entry]:
    """The log once the current attempt ends with `outcome` (done, failed)."""
    log = [dict(entry) for entry in log] or [{"attempt": 1, "trigger": "received"}]
    log[-1].update(finished_at=now, outcome=outcome, reason=reason, retries=step_retries(result))
    return log


def total_retries(log: list[Entry], current: dict[str, Any] | None) -> int:
    """Retries over every attempt, counting the running one's from its result so far."""
    done = sum(int(entry.get("retries") or 0) for entry in log if entry.get("finished_at"))
    running = log and not log[-1].get("finished_at") and log[-1].get("started_at")
    return done + (step_retries(current or {}) if running else 0)


def current_step(result: dict[str, Any]) -> dict[str, Any] | None:
    """The step a running order is in (its name, start and tries so far), if any."""
    for step in reversed(result.get("steps") or []):
        if isinstance(step, dict) and step.get("status") == "running":
            return step
    return None
