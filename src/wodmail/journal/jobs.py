"""The job record: one order as the journal keeps it, from arrival to its result."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from wodmail.journal import attempts
from wodmail.orders import StudentSpan


class JobState(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # by an admin (`wodmail cancel`) before it ran
    # Shown, never stored: recorded `running`, but no daemon holds the journal (stopped or
    # killed mid-order); the next start runs it again.
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.REJECTED, JobState.CANCELLED)


class Job(StudentSpan):
    """An order as recorded. Rejected mails are jobs too, with only what could be read."""

    id: int
    state: JobState
    verb: str | None = None
    customer: int | None = None
    email: str | None = None
    workshop: str | None = None
    content: str | None = None
    mode: str | None = None
    message_id: str | None = None
    peer: str | None = None
    envelope_from: str | None = None
    sender: str | None = None
    subject: str | None = None
    reason: str | None = None
    received_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    duplicates: int = 0
    result: dict[str, Any] = Field(default_factory=dict)
    attempt_log: list[dict[str, Any]] = Field(default_factory=list)

    def to_public(self, *, with_secrets: bool = False) -> dict[str, Any]:
        """The JSON shape of `wodmail jobs --json` / `wodmail show --json` (a stable interface)."""
        result = dict(self.result)
        if not with_secrets and "password" in result:
            result["password"] = "***"
        return {
            "id": self.id,
            "state": self.state.value,
            "verb": self.verb,
            "student": self.student_field,
            "customer": self.customer,
            "workshop": self.workshop,
            "email": self.email,
            "mode": self.mode,
            "reason": self.reason,
            "received_at": _iso(self.received_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "attempts": self.attempts,
            "retries": attempts.total_retries(self.attempt_log, self.result),
            "current_step": self._current_step(),
            "attempt_log": [_with_iso(entry) for entry in self.attempt_log],
            "duplicates": self.duplicates,
            "message_id": self.message_id,
            "peer": self.peer,
            "envelope_from": self.envelope_from,
            "sender": self.sender,
            "subject": self.subject,
            "result": result,
        }

    def _current_step(self) -> dict[str, Any] | None:
        """For a running (or interrupted) order: its attempt, the step it is in, since when
        and which try."""
        if self.state not in (JobState.RUNNING, JobState.INTERRUPTED):
            return None
        step = attempts.current_step(self.result)
        if step is None:
            return None
        return {
            "attempt": self.attempts,
            "name": step.get("name"),
            "started_at": _iso(step.get("started_at")),
            "try": int(step.get("attempts", 1)),
            "last_error": step.get("last_error"),
        }


def _with_iso(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) if k.endswith("_at") else v for k, v in entry.items()}


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
