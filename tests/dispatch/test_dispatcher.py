"""The dispatcher's rules: one order at a time per student in arrival order, a bound on
concurrency, ranges holding every lane, waiting without a slot; and step retries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from wodmail.dispatch.dispatcher import Dispatcher, JobContext
from wodmail.dispatch.steps import RetryPolicy, StepFailed, Steps
from wodmail.errors import PeerUnavailable
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import Arrival, Journal, JournalReader
from wodmail.orders import Mode, Order, Verb

ARRIVAL = Arrival(peer="127.0.0.1", envelope_from="a@b")


class Recorder:
    """A runner that records when each job starts and ends, and can be held."""

    def __init__(self, hold: float = 0.05) -> None:
        self.hold = hold
        self.events: list[tuple[str, int]] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, job: Job, ctx: JobContext) -> dict:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.events.append(("start", job.id))
        await asyncio.sleep(self.hold)
        self.events.append(("end", job.id))
        self.running -= 1
        return {"ran": job.id}


@pytest.fixture
async def journal(tmp_path: Path):
    journal = Journal(tmp_path / "j.sqlite3", dedup_window=0)
    yield journal
    journal.close()


async def submit(journal: Journal, dispatcher: Dispatcher, verb: Verb, student: int,
                 student_max: int | None = None, customer: int = 0) -> int:
    order = Order(verb=verb, student=student, student_max=student_max, customer=customer,
                  workshop="WKSHP-API101", content="WKSHP-API101", mode=Mode.WKSHP)
    accepted = await journal.accept(order, ARRIVAL)
    dispatcher.submit(accepted.job)
    return accepted.job_id


async def test_one_student_runs_in_arrival_order_one_at_a_time(journal):
    runner = Recorder()
    dispatcher = Dispatcher(journal, runner, concurrency=8)
    await dispatcher.start()
    ids = [await submit(journal, dispatcher, verb, 3, customer=n)
           for n, verb in enumerate([Verb.CREATE, Verb.CLEANUP, Verb.PURGE, Verb.CREATE])]
    await dispatcher.drain()
    assert runner.events == [(kind, i) for i in ids for kind in ("start", "end")]
    assert runner.peak == 1


async def test_students_run_concurrently_within_the_bound(journal):
    runner = Recorder(hold=0.1)
    dispatcher = Dispatcher(journal, runner, concurrency=3)
    await dispatcher.start()
    for student in range(1, 11):
        await submit(journal, dispatcher, Verb.CREATE, student)
    await dispatcher.drain()
    assert runner.peak == 3
    jobs = JournalReader(journal.path).list_jobs()
    assert all(job.state is JobState.DONE for job in jobs) and len(jobs) == 10


async def test_a_reset_range_holds_every_student_in_it(journal):
    runner = Recorder()
    dispatcher = Dispatcher(journal, runner, concurrency=8)
    await dispatcher.start()
    before = await submit(journal, dispatcher, Verb.CREATE, 2)
    reset = await submit(journal, dispatcher, Verb.RESET, 1, student_max=3)
    after = await submit(journal, dispatcher, Verb.CREATE, 3)
    outside = await submit(journal, dispatcher, Verb.CREATE, 7)
    await dispatcher.drain()
    order = [i for kind, i in runner.events if kind == "start"]
    assert order.index(before) < order.index(reset) < order.index(after)
    ends = [i for kind, i in runner.events if kind == "end"]
    assert ends.index(before) < order.index(reset) and ends.index(reset) < order.index(after)
    assert order.index(outside) < order.index(reset), "student 7 is not held by the range"


async def test_waiting_gives_the_slot_back(journal):
    released = asyncio.Event()
    finished: list[int] = []

    async def runner(job: Job, ctx: JobContext) -> dict:
        if job.student == 1:
            async with ctx.idle():
                await released.wait()
        finished.append(job.student or 0)
        return {}

    dispatcher = Dispatcher(journal, runner, concurrency=1)
    await dispatcher.start()
    await submit(journal, dispatcher, Verb.RESET, 1)
    await submit(journal, dispatcher, Verb.CREATE, 2)
    await asyncio.wait_for(_until(lambda: finished == [2]), 5)
    released.set()
    await dispatcher.drain()
    assert finished == [2, 1]


async def test_a_failing_order_is_recorded_with_reason_and_partial_result(journal):
    async def runner(job: Job, ctx: JobContext) -> dict:
        error = RuntimeError("hub start: hub says no")
        error.result = {"steps": [{"name": "hub start", "status": "failed"}]}  # type: ignore[attr-defined]
        raise error

    dispatcher = Dispatcher(journal, runner)
    await dispatcher.start()
    job_id = await submit(journal, dispatcher, Verb.CREATE, 5)
    await dispatcher.drain()
    job = JournalReader(journal.path).get(job_id)
    assert job.state is JobState.FAILED
    assert job.reason == "hub start: hub says no"
    assert job.result["steps"][0]["name"] == "hub start"


async def test_stop_leaves_interrupted_orders_running_for_the_next_start(journal):
    async def runner(job: Job, ctx: JobContext) -> dict:
        await asyncio.sleep(60)
        return {}

    dispatcher = Dispatcher(journal, runner)
    await dispatcher.start()
    job_id = await submit(journal, dispatcher, Verb.CREATE, 5)
    await asyncio.wait_for(_until(lambda: JournalReader(journal.path).get(job_id).state
                                  is JobState.RUNNING), 5)
    await dispatcher.stop(grace=0.1)
    assert [job.id for job in JournalReader(journal.path).unfinished()] == [job_id]


async def test_steps_retry_transient_failures_then_succeed(journal):
    flaky = failing_twice()

    steps = Steps(await _context(journal), RetryPolicy(0.01, 0.02, 5))
    assert await steps.run("portal student/1 password", flaky) == "ok"
    [record] = steps.result["steps"]
    assert (record["status"], record["attempts"]) == ("ok", 3)


async def test_steps_give_up_at_the_deadline_and_do_not_retry_the_rest(journal):
    async def down() -> None:
        raise PeerUnavailable("API-DB", "connection refused")

    steps = Steps(await _context(journal), RetryPolicy(0.05, 0.05, 0.2))
    with pytest.raises(StepFailed) as info:
        await steps.run("portal customer/4 active", down)
    assert str(info.value).startswith("portal customer/4 active: API-DB: connection refused")
    assert "gave up after" in str(info.value)

    async def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(StepFailed, match="deploy: bad input"):
        await steps.run("deploy", broken)
    assert steps.result["steps"][-1].get("attempts", 1) == 1


def failing_twice() -> Callable[[], Awaitable[str]]:
    """A peer call that meets a 503 twice, then succeeds."""
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise PeerUnavailable("API-DB", "503 Service Unavailable", status=503)
        return "ok"

    return call


async def _context(journal: Journal) -> JobContext:
    order = Order(verb=Verb.CREATE, student=1, customer=0, workshop="WKSHP-API101",
                  content="WKSHP-API101", mode=Mode.WKSHP)
    accepted = await journal.accept(order, ARRIVAL)
    slots = asyncio.Semaphore(1)
    await slots.acquire()
    return JobContext(accepted.job, slots, journal)


async def _until(condition) -> None:
    while not condition():  # noqa: ASYNC110 - polls state owned by another task
        await asyncio.sleep(0.01)


async def test_a_late_resolved_student_joins_its_lane_in_arrival_order(journal):
    events: list[str] = []
    first_may_end = asyncio.Event()

    async def runner(job: Job, ctx: JobContext) -> dict:
        if job.student is None:  # "[object Promise]": its student turns out to be 4
            events.append(f"{job.id} resolved")
            await ctx.hold_student(4)
        elif job.id == 1:
            await first_may_end.wait()
        events.append(f"{job.id} works")
        return {}

    dispatcher = Dispatcher(journal, runner, concurrency=2)
    await dispatcher.start()
    await submit(journal, dispatcher, Verb.CREATE, 4, customer=9)
    promise = Order(verb=Verb.PURGE, student=None, customer=9, workshop="WKSHP-API101",
                    content="WKSHP-API101", mode=Mode.WKSHP)
    dispatcher.submit((await journal.accept(promise, ARRIVAL)).job)
    await submit(journal, dispatcher, Verb.CLEANUP, 4, customer=9)
    await asyncio.wait_for(_until(lambda: "2 resolved" in events), 5)
    first_may_end.set()
    await dispatcher.drain()
    assert events == ["2 resolved", "1 works", "2 works", "3 works"]


async def test_the_retry_deadline_counts_from_each_step(journal):
    steps = Steps(await _context(journal), RetryPolicy(0.01, 0.02, 0.3))

    async def slow() -> None:
        await asyncio.sleep(0.4)  # longer than the whole retry budget

    await steps.run("wait customer/4 cleaned", slow)
    flaky = failing_twice()

    assert await steps.run("portal student/4 assigned", flaky) == "ok"


async def test_a_stop_does_not_wait_for_an_order_sleeping_between_retries(journal):
    # The portal is down: the order waits (a long backoff) between tries of one step. A stop
    # interrupts it at once instead of waiting out the grace; the next start runs it again.
    tried = asyncio.Event()

    async def runner(job: Job, ctx: JobContext) -> dict:
        steps = Steps(ctx, RetryPolicy(base_seconds=3600, max_seconds=3600,
                                       deadline_seconds=86400))

        async def down() -> None:
            tried.set()
            raise PeerUnavailable("API-DB", "connection refused")

        await steps.run("portal customer/5 active", down)
        return {}

    dispatcher = Dispatcher(journal, runner)
    await dispatcher.start()
    job_id = await submit(journal, dispatcher, Verb.CREATE, 5)
    await asyncio.wait_for(tried.wait(), 60)
    # A grace of an hour: a stop that waited for the sleeping order would time out here.
    await asyncio.wait_for(dispatcher.stop(grace=3600), 120)
    [left] = JournalReader(journal.path).unfinished()
    assert left.id == job_id and left.state is JobState.RUNNING


async def test_a_stop_interrupts_an_order_that_starts_waiting_during_the_grace(journal):
    started, release = asyncio.Event(), asyncio.Event()

    async def runner(job: Job, ctx: JobContext) -> dict:
        started.set()
        await release.wait()  # working (holding its slot) when the stop begins
        async with ctx.idle():  # then it would wait for an hour
            await asyncio.sleep(3600)
        return {}

    dispatcher = Dispatcher(journal, runner)
    await dispatcher.start()
    await submit(journal, dispatcher, Verb.CREATE, 5)
    await asyncio.wait_for(started.wait(), 60)
    stopping = asyncio.ensure_future(dispatcher.stop(grace=3600))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(stopping, 120)


def test_backoff_jitter_stays_inside_the_cap():
    policy = RetryPolicy(base_seconds=1, max_seconds=30, deadline_seconds=300)
    for attempt in range(1, 12):
        ceiling = min(30, 2 ** (attempt - 1))
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), (attempt, max(delays))
    assert max(policy.delay(20) for _ in range(1000)) <= 30


# --- an order's running record (wodmail show) --------------------------------------------


class TwoStepsThenHold:
    """A runner whose steps `wodmail show` follows: two quick ones, then one that waits."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, job: Job, ctx: JobContext) -> dict:
        steps = Steps(ctx, RetryPolicy(0.01, 0.02, 5))

        async def quick() -> None:
            return None

        await steps.run("first", quick)
        await steps.run("second", quick)
        await steps.run("long hook", self.release.wait)
        await steps.run("last", quick)  # its progress note is still due when the order ends
        steps.result["outcome"] = "final"
        return steps.result


def shown_steps(journal: Journal, job_id: int) -> list[tuple[str, str]]:
    result = JournalReader(journal.path).get(job_id).result
    return [(step["name"], step["status"]) for step in result.get("steps", [])]


async def test_show_follows_the_running_step_and_the_outcome_is_never_overwritten(
    journal, monkeypatch
):
    """Progress is written at most every PROGRESS_SECONDS, yet the step under way shows up
    within that time, and a write still due when the order ends is dropped."""
    monkeypatch.setattr("wodmail.dispatch.dispatcher.PROGRESS_SECONDS", 0.3)
    runner = TwoStepsThenHold()
    dispatcher = Dispatcher(journal, runner, concurrency=2)
    await dispatcher.start()
    job_id = await submit(journal, dispatcher, Verb.CREATE, 4)
    running = ("long hook", "running")
    await asyncio.wait_for(_until(lambda: running in shown_steps(journal, job_id)), 30)
    assert shown_steps(journal, job_id)[:2] == [("first", "ok"), ("second", "ok")]

    # Ends with a progress write due: "long hook" closes and the order finishes at once.
    runner.release.set()
    await dispatcher.drain()
    done_at = asyncio.get_running_loop().time()
    final = JournalReader(journal.path).get(job_id)
    assert final.state is JobState.DONE and final.result["outcome"] == "final"
    # Past the throttle window, nothing has rewritten the outcome with a running record.
    await _until(lambda: asyncio.get_running_loop().time() > done_at + 0.6)
    await journal.save_result(job_id + 1000, {})  # a later write: everything before is in
    again = JournalReader(journal.path).get(job_id)
    assert again.result == final.result and again.state is JobState.DONE
