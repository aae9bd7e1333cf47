"""The dispatcher: runs committed orders, one lane per student, bounded overall.

- Orders for one student run one at a time, in arrival (job id) order. A RESET range holds
  the lane of every student in it; an order whose student is not known yet (the portal's
  `[object Promise]`) holds its customer's lane, then joins its student's lane, in arrival
  order, once the lifecycle has resolved the student (`JobContext.hold_student`).
- At most `concurrency` orders do work at once. An order that waits (for the portal to say
  `cleaned`, or between retries) gives its slot back while it waits, via `JobContext.idle()`,
  so waiting never holds up other students.
- The runner returns the result record (→ `done`) or raises (→ `failed`, the exception's
  message as the reason, its `result` attribute, if any, as the result record).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog

from wodmail import metrics
from wodmail.dispatch.yielding import IntakeFirst
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import Journal, JournalClosed, JournalLost, StepRecord, until_recorded

log = structlog.get_logger(__name__)

PROGRESS_SECONDS = 0.25
"""An order's running record (`wodmail show`: the current step) is rewritten at most this
often; each rewrite is a journal write of the whole result so far."""


class Idlers:
    """The orders that only wait right now, and whether the dispatcher is stopping: an order
    that starts waiting while it stops is interrupted at once rather than at the grace's end."""

    def __init__(self) -> None:
        self.tasks: dict[int, asyncio.Task[Any]] = {}
        self.stopping = False

    def enter(self, job_id: int) -> None:
        task = asyncio.current_task()
        if task is None:
            return
        if self.stopping:
            task.cancel()
        self.tasks[job_id] = task

    def leave(self, job_id: int) -> None:
        self.tasks.pop(job_id, None)

    def interrupt_all(self) -> None:
        self.stopping = True
        for task in self.tasks.values():
            task.cancel()


class JobContext:
    """What a running order may ask of the dispatcher."""

    def __init__(
        self,
        job: Job,
        slots: asyncio.Semaphore,
        journal: Journal,
        join_lane: Callable[[int, str], asyncio.Future[None] | None] | None = None,
        idlers: Idlers | None = None,
        intake_first: IntakeFirst | None = None,
    ) -> None:
        self.job = job
        self._slots = slots
        self._journal = journal
        self._join_lane = join_lane
        self._idlers = idlers or Idlers()
        self._intake_first = intake_first or IntakeFirst()
        self._in_step = False  # holds a step's turn (see `step`)
        self.started = time.monotonic()
        self._progress_at = -math.inf  # when progress was last written
        self._progress_timer: asyncio.TimerHandle | None = None
        self._progress_stopped = False  # the outcome is being written: no more progress

    @asynccontextmanager
    async def step(self) -> AsyncIterator[None]:
        """Held while a step does its work: while clients are handing orders over, only a
        few orders do at once (`IntakeFirst`). A step inside a step takes no second turn."""
        if self._in_step:
            yield
            return
        await self._intake_first.enter()
        self._in_step = True
        try:
            yield
        finally:
            if self._in_step:
                self._in_step = False
                self._intake_first.leave()

    async def hold_student(self, student: int) -> None:
        """Joins the lane of a student resolved late; returns when this order is at its head."""
        if self._join_lane is None:
            return
        turn = self._join_lane(self.job.id, f"student:{student}")
        if turn is not None:
            async with self.idle():
                await turn

    @asynccontextmanager
    async def idle(self) -> AsyncIterator[None]:
        """Gives the concurrency slot back while the order waits (it keeps its lanes).

        A stop does not wait for an order that only waits (between retries, for `cleaned`):
        it is interrupted at once, and runs again on the next start."""
        self._idlers.enter(self.job.id)
        self._slots.release()
        in_step, self._in_step = self._in_step, False
        if in_step:
            self._intake_first.leave()
        try:
            yield
        finally:
            self._idlers.leave(self.job.id)
            await self._slots.acquire()
            if in_step:
                await self._intake_first.enter()
                self._in_step = True

    @property
    def rerun(self) -> bool:
        """Has this order run before (a restart after a crash, or a retry)?"""
        return self.job.attempts > 0

    def done_steps(self) -> dict[str, StepRecord]:
        """The steps an earlier run of this order recorded as done."""
        if not self.rerun:
            return {}
        return {s.name: s for s in self._journal.steps(self.job.id) if s.state == "done"}

    async def record_step(self, step: StepRecord, result: dict[str, Any]) -> None:
        await until_recorded(f"step {step.name}", lambda: self._journal.record_step(step, result))

    async def save_progress(self, result: dict[str, Any]) -> None:
        await until_recorded("progress", lambda: self._journal.save_result(self.job.id, result))

    def note_progress(self, result: dict[str, Any]) -> None:
        """Records the result so far without waiting for the commit (the current step), at
        most every PROGRESS_SECONDS: a later note in that time is written when it ends, as
        `result` then is (the dict the order keeps updating). Only `wodmail show` reads it;
        what a re-run relies on is committed by `record_step`, at once."""
        if self._progress_timer is not None or self._progress_stopped:
            return  # a write is due already, or the order is ending
        wait = self._progress_at + PROGRESS_SECONDS - time.monotonic()
        if wait <= 0:
            self._write_progress(result)
        else:
            loop = asyncio.get_running_loop()
            self._progress_timer = loop.call_later(wait, self._write_progress, result)

    def _write_progress(self, result: dict[str, Any]) -> None:
        self._progress_timer = None
        self._progress_at = time.monotonic()
        self._journal.note_progress(self.job.id, result)

    def stop_progress(self) -> None:
        """No progress is written from now on: the order's outcome is about to be."""
        if self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None
        self._progress_stopped = True

    async def record_student(self, student: int) -> None:
        """An `[object Promise]` order's student, once resolved: kept on the job (so
        `wodmail jobs --student N` finds it) and bound to this order's log lines."""
        await self._journal.set_student(self.job.id, student)
        structlog.contextvars.bind_contextvars(student=student)


Runner = Callable[[Job, JobContext], Awaitable[dict[str, Any]]]


async def noop_runner(job: Job, ctx: JobContext) -> dict[str, Any]:
    """Stands where the lifecycle goes until it is configured: records that nothing was done."""
    return {"summary": "no-op", "steps": []}


def lane_keys(job: Job) -> list[str]:
    if job.students:
        return [f"student:{n}" for n in job.students]
    return [f"customer:{job.customer}"]


class Dispatcher:
    """An `Executor` that runs each job through `runner` under the lane and slot rules."""

    def __init__(
        self,
        journal: Journal,
        runner: Runner,
        *,
        concurrency: int = 8,
        intake_first: IntakeFirst | None = None,
    ) -> None:
        self._journal = journal
        self._runner = runner
        self._slots = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self._withheld: list[asyncio.Task[None]] = []  # slots taken back by `resize`
        self._lanes: dict[str, deque[int]] = {}
        # Jobs waiting to reach the head of all their lanes: woken one by one, never all.
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._keys: dict[int, list[str]] = {}
        self._executing: set[int] = set()  # jobs past their lanes and slot: doing work
        self._idlers = Idlers()
        self.intake_first = intake_first or IntakeFirst()
        self._accepting = False

    async def start(self) -> None:
        self._accepting = True

    def holds(self, job_id: int) -> bool:
        """Is this order queued or running here?"""
        return job_id in self._tasks

    def submit(self, job: Job) -> None:
        if not self._accepting or job.id in self._tasks:
            return
        keys = lane_keys(job)
        self._keys[job.id] = keys
        for key in keys:
            self._lanes.setdefault(key, deque()).append(job.id)
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _t, job_id=job.id: self._forget(job_id))

    def _forget(self, job_id: int) -> None:
        self._tasks.pop(job_id, None)
        self._keys.pop(job_id, None)

    async def _run(self, job: Job) -> None:
        keys = self._keys[job.id]
        try:
            if not self._at_head(job.id, keys):
                ready = asyncio.get_running_loop().create_future()
                self._waiting[job.id] = ready
                await ready
            async with self._slots:
                await self._execute(job)
        finally:
            self._waiting.pop(job.id, None)
            self._leave_lanes(job.id, keys)

    def _at_head(self, job_id: int, keys: list[str]) -> bool:
        return all(self._lanes[key][0] == job_id for key in keys)

    def _join_lane(self, job_id: int, key: str) -> asyncio.Future[None] | None:
        """Puts a running job into one more lane, after the head and before any later
        arrival; returns a future for its turn, or None when it is already at the head."""
        keys = self._keys[job_id]
        if key in keys:
            return None
        keys.append(key)
        lane = self._lanes.setdefault(key, deque())
        position = next((i for i in range(1, len(lane)) if lane[i] > job_id), len(lane))
        lane.insert(position, job_id)
        if self._at_head(job_id, keys):
            return None
        turn = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = turn
        return turn

    def _leave_lanes(self, job_id: int, keys: list[str]) -> None:
        heads = set()
        for key in keys:
            lane = self._lanes.get(key)
            if lane is None:
                continue
            try:
                lane.remove(job_id)
            except ValueError:
                pass
            if lane:
                heads.add(lane[0])
            else:
                del self._lanes[key]
        for head in heads:
            ready = self._waiting.get(head)
            if ready is not None and not ready.done() and self._at_head(head, self._keys[head]):
                ready.set_result(None)

    async def _execute(self, job: Job) -> None:
        if not self._accepting:
            return  # stopping: left for the next start, as it is in the journal
        self._executing.add(job.id)
        try:
            await self._execute_now(job)
        finally:
            self._executing.discard(job.id)

    async def _execute_now(self, job: Job) -> None:
        bound = structlog.contextvars.bound_contextvars(
            job=job.id, verb=job.verb, student=job.student_field, workshop=job.workshop
        )
        with bound:
            try:
                started = await until_recorded(
                    "start", lambda: self._journal.mark_running(job.id)
                )
            except (JournalLost, JournalClosed) as exc:
                log.error("order not started: the journal cannot record it", error=str(exc))
                return
            if not started:
                log.info("order cancelled before it ran")
                return
            log.debug("order started", attempt=job.attempts + 1)
            ctx = JobContext(job, self._slots, self._journal, self._join_lane, self._idlers,
                             self.intake_first)
            try:
                try:
                    result = await self._runner(job, ctx)
                finally:
                    ctx.stop_progress()
            except asyncio.CancelledError:
                log.warning("order interrupted; it will run again on the next start")
                metrics.order_finished(job.verb, "interrupted", ctx.started)
                raise
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
                partial = getattr(exc, "result", None) or {}
                await self._outcome(job, JobState.FAILED, partial, reason)
                metrics.order_finished(job.verb, "failed", ctx.started)
                log.error("order failed", reason=reason, seconds=_since(ctx.started))
                return
            await self._outcome(job, JobState.DONE, result, None)
            metrics.order_finished(job.verb, "done", ctx.started)
            log.info("order done", seconds=_since(ctx.started))

    async def _outcome(
        self, job: Job, state: JobState, result: dict[str, Any], reason: str | None
    ) -> None:
        """Records how the order ended, retrying until the journal takes it (a full disk)."""
        try:
            await until_recorded(
                "outcome",
                lambda: self._journal.finish(job.id, state, result=result, reason=reason),
            )
        except (JournalLost, JournalClosed) as exc:
            log.error("order outcome not recorded: the journal is gone", outcome=state.value,
                      reason=reason, error=str(exc))

    def resize(self, concurrency: int) -> None:
        """Changes how many orders may do work at once (a reload); running ones go on."""
        while concurrency > self.concurrency and self._withheld:
            self._withheld.pop().cancel()
            self.concurrency += 1
        for _ in range(concurrency - self.concurrency):
            self._slots.release()
        loop = asyncio.get_running_loop()
        for _ in range(self.concurrency - concurrency):
            self._withheld.append(loop.create_task(self._withhold_slot()))
        self.concurrency = concurrency

    async def _withhold_slot(self) -> None:
        await self._slots.acquire()
        try:
            await asyncio.Event().wait()
        finally:
            self._slots.release()

    def lane_counts(self) -> dict[str, tuple[int, int]]:
        """Per lane: (orders doing work, orders waiting)."""
        counts = {}
        for key, lane in self._lanes.items():
            running = sum(1 for job_id in lane if job_id in self._executing)
            counts[key] = (running, len(lane) - running)
        return counts

    def counts(self) -> tuple[int, int]:
        """(orders doing work, orders waiting for their lane or a slot)."""
        running = len(self._executing)
        return running, len(self._tasks) - running

    async def stop(self, grace: float) -> None:
        """Orders not started yet, and running ones that only wait (for a retry, for
        `cleaned`), are left at once (they run on the next start); the others get `grace`
        seconds, then are interrupted and left likewise."""
        self._accepting = False
        self._idlers.interrupt_all()
        for task in self._withheld:
            task.cancel()
        waiting = [task for job_id, task in self._tasks.items() if job_id not in self._executing]
        for task in waiting:
            task.cancel()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def drain(self) -> None:
        """Waits until every submitted order has finished (for tests and the demo)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
