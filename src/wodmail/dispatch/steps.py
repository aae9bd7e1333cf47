"""Named, timed steps of an order, with retries for what a flaky peer breaks.

Each step lands in the order's result as
``{"name", "status", "started_at", "ms", "attempts", "error"}`` (`attempts` only when the
step was tried more than once). The record is written to the journal, without waiting for
the commit, when the step starts and before each retry, so `wodmail show` of a running
order names its current step, its try and the last transient error (`last_error`).
A step that raises a `TransientError` is tried again with exponential backoff and jitter,
the order's concurrency slot given back while it sleeps, for at most `deadline_seconds`
from the step's first try (per step, so an order that first waited long for the portal
still gets its retries); any other error, or the deadline, fails the step and the order.

A step run with `once=True` also gets a `done` row in the journal's `steps` table, committed
(with the order's result so far) before the order goes on. A re-run of the order (after a
crash, or a retry) skips those and returns the value they returned the first time; the
lifecycle decides, per verb, which steps are `once`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from wodmail import metrics
from wodmail.dispatch.dispatcher import JobContext
from wodmail.errors import TransientError, WodmailError
from wodmail.journal.store import StepRecord

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 1.0
    max_seconds: float = 30.0
    deadline_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        """Backoff before try `attempt + 1`: a random time between half and all of
        base * 2^(attempt-1), that ceiling capped at `max_seconds` (the jitter stays inside
        the cap, and spreads the retries of many orders hit by one peer's outage)."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


class StepFailed(WodmailError):
    """A step failed: the order fails with ``"<step>: <error>"`` and the result so far."""

    def __init__(self, step: str, cause: BaseException, result: dict[str, Any]) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause
        self.result = result


class Steps:
    """Runs and records the steps of one order; `result` is what the journal keeps."""

    def __init__(self, ctx: JobContext, policy: RetryPolicy) -> None:
        self._ctx = ctx
        self._policy = policy
        self._done = ctx.done_steps()
        # A re-run starts from what the earlier run recorded (password, completion ...),
        # with a fresh list of this run's steps.
        carried = {k: v for k, v in ctx.job.result.items() if k != "steps"} if ctx.rerun else {}
        self.result: dict[str, Any] = {**carried, "steps": []}

    def passed(self, name: str) -> bool:
        """Did an earlier run of this order record `name` as done?"""
        return name in self._done

    async def run(
        self, name: str, action: Callable[[], Awaitable[T]], *, once: bool = False
    ) -> T:
        """Runs `action` as step `name`, retrying transient failures until the deadline.

        With `once`, a step an earlier run recorded as done is not run again (its value then
        is the one it returned that time), and its own completion is committed before this
        returns.
        """
        if once and name in self._done:
            self.result["steps"].append(
                {"name": name, "status": "resumed", "why": "done by an earlier run"}
            )
            return self._done[name].detail.get("value")  # type: ignore[no-any-return]
        record: dict[str, Any] = {"name": name, "status": "running", "started_at": time.time()}
        self.result["steps"].append(record)
        started = time.monotonic()
        deadline = started + self._policy.deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                record["attempts"] = attempt
            self._ctx.note_progress(self.result)
            try:
                async with self._ctx.step():
                    value = await action()
            except TransientError as exc:
                pause = self._policy.delay(attempt)
                if time.monotonic() + pause > deadline:
                    self._close(record, started, attempt, exc)
                    raise StepFailed(name, _gave_up(exc, attempt), self.result) from exc
                record["last_error"] = str(exc) or type(exc).__name__
                log.warning("step will be retried", step=name, attempt=attempt, error=str(exc),
                            retry_in=round(pause, 2))
                async with self._ctx.idle():
                    await asyncio.sleep(pause)
            except Exception as exc:
                self._close(record, started, attempt, exc)
                raise StepFailed(name, exc, self.result) from exc
            else:
                self._close(record, started, attempt, None)
                if once:
                    await self._record(name, record, {"value": _jsonable(value)})
                return value

    async def mark(self, name: str) -> None:
        """Commits a checkpoint `name` (no action of its own): `passed(name)` on any re-run."""
        await self._record(name, {"started_at": time.time()}, {})

    async def _record(self, name: str, record: dict[str, Any], detail: dict[str, Any]) -> None:
        kept = {k: v for k, v in record.items() if k not in ("name", "status", "started_at")}
        step = StepRecord(self._ctx.job.id, name, "done", record.get("started_at"), time.time(),
                          int(record.get("attempts", 1)), {**kept, **detail})
        await self._ctx.record_step(step, self.result)
        self._done[name] = step

    def skip(self, name: str, why: str) -> None:
        self.result["steps"].append({"name": name, "status": "skipped", "why": why})

    def _close(
        self, record: dict[str, Any], started: float, attempts: int, error: BaseException | None
    ) -> None:
        record["status"] = "failed" if error else "ok"
        record.pop("last_error", None)
        record["ms"] = round((time.monotonic() - started) * 1000, 1)
        if attempts > 1:
            record["attempts"] = attempts
        if error is not None:
            record["error"] = str(error) or type(error).__name__
            output = getattr(error, "output", "")
            if output:
                record["output"] = output
        # A step that went through is in the order's record (`wodmail show`); a line each at
        # info level, a dozen per CREATE, was the larger part of the event loop's logging.
        emit = log.info if error is not None or attempts > 1 else log.debug
        emit("step", step=record["name"], status=record["status"], ms=record["ms"],
             **({"attempts": attempts} if attempts > 1 else {}))
        metrics.step_finished(self._ctx.job.verb, record["name"], record["status"],
                              record["ms"] / 1000)

    async def save(self) -> None:
        await self._ctx.save_progress(self.result)


def _jsonable(value: Any) -> Any:
    """`value` if the journal can keep it as JSON, else None (the result holds what matters)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _gave_up(exc: BaseException, attempts: int) -> WodmailError:
    return WodmailError(f"{exc} (gave up after {attempts} attempts)")
