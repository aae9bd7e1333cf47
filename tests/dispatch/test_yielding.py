"""Execution makes way for the intake: while clients hand orders over, orders run their
steps one at a time; at full concurrency once the intake is quiet; never held up for good."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from wodmail.dispatch.dispatcher import Dispatcher, JobContext
from wodmail.dispatch.steps import RetryPolicy, Steps
from wodmail.dispatch.yielding import IntakeFirst
from wodmail.journal.jobs import Job
from wodmail.journal.store import Arrival, Journal
from wodmail.orders import Mode, Order, Verb

ARRIVAL = Arrival(peer="127.0.0.1", envelope_from="a@b")
SETTLE_SECONDS = 30.0  # generous: a loaded machine may be slow, never this slow


class StepCounter:
    """A runner whose orders run `steps` steps of `hold` seconds; counts steps at once."""

    def __init__(self, steps: int = 2, hold: float = 0.05) -> None:
        self.steps = steps
        self.hold = hold
        self.in_step = 0
        self.peak = 0

    async def __call__(self, job: Job, ctx: JobContext) -> dict:
        steps = Steps(ctx, RetryPolicy())
        for n in range(self.steps):
            await steps.run(f"step {n}", self._work)
        return steps.result

    async def _work(self) -> None:
        self.in_step += 1
        self.peak = max(self.peak, self.in_step)
        await asyncio.sleep(self.hold)
        self.in_step -= 1


@pytest.fixture
async def journal(tmp_path: Path):
    journal = Journal(tmp_path / "j.sqlite3", dedup_window=0)
    yield journal
    journal.close()


async def submit(journal: Journal, dispatcher: Dispatcher, student: int) -> None:
    order = Order(verb=Verb.CREATE, student=student, customer=student,
                  workshop="WKSHP-API101", content="WKSHP-API101", mode=Mode.WKSHP)
    dispatcher.submit((await journal.accept(order, ARRIVAL)).job)


async def run_four_orders(journal: Journal, runner, intake_first: IntakeFirst) -> None:
    dispatcher = Dispatcher(journal, runner, concurrency=8, intake_first=intake_first)
    await dispatcher.start()
    for student in range(1, 5):
        await submit(journal, dispatcher, student)
    await asyncio.wait_for(dispatcher.drain(), SETTLE_SECONDS)


async def test_while_clients_hand_orders_over_one_order_runs_a_step_at_a_time(journal):
    intake_first = IntakeFirst(quiet_seconds=SETTLE_SECONDS, max_wait_seconds=SETTLE_SECONDS)
    intake_first.input_received()  # a session read a line: busy for the next 30 s
    runner = StepCounter()
    await run_four_orders(journal, runner, intake_first)
    assert runner.peak == 1


async def test_once_the_intake_is_quiet_orders_run_at_full_concurrency(journal):
    runner = StepCounter(hold=0.3)
    await run_four_orders(journal, runner, IntakeFirst())
    assert runner.peak == 4


async def test_a_step_waits_for_its_turn_at_most_max_wait(journal):
    """A step that keeps its turn (a hub slow to start a server) holds the others up for
    `max_wait_seconds` at most, however busy the intake."""
    intake_first = IntakeFirst(quiet_seconds=SETTLE_SECONDS, max_wait_seconds=0.2)

    async def slow(ctx: JobContext, second_started: asyncio.Event) -> None:
        await asyncio.wait_for(second_started.wait(), SETTLE_SECONDS)

    assert await first_and_second(journal, intake_first, slow) == [
        "second started", "first ended"]


async def test_an_order_that_only_waits_gives_its_turn_back(journal):
    intake_first = IntakeFirst(quiet_seconds=SETTLE_SECONDS, max_wait_seconds=SETTLE_SECONDS)

    async def wait_for_the_portal(ctx: JobContext, second_started: asyncio.Event) -> None:
        async with ctx.idle():  # as waiting for `cleaned` does
            await asyncio.wait_for(second_started.wait(), SETTLE_SECONDS)

    assert await first_and_second(journal, intake_first, wait_for_the_portal) == [
        "second started", "first ended"]


async def first_and_second(
    journal: Journal,
    intake_first: IntakeFirst,
    first_step: Callable[[JobContext, asyncio.Event], Awaitable[None]],
) -> list[str]:
    """Student 1's order runs `first_step` (told when student 2's step starts), student 2's
    order a quick step a moment later, while the intake is busy; what happened, in order."""
    intake_first.input_received()
    second_started = asyncio.Event()
    order: list[str] = []

    async def runner(job: Job, ctx: JobContext) -> dict:
        steps = Steps(ctx, RetryPolicy())
        if job.student == 1:
            await steps.run("first", lambda: first_step(ctx, second_started))
            order.append("first ended")
        else:
            await asyncio.sleep(0.05)  # the first order takes its turn before
            await steps.run("quick", _set(second_started, order))
        return steps.result

    dispatcher = Dispatcher(journal, runner, concurrency=8, intake_first=intake_first)
    await dispatcher.start()
    await submit(journal, dispatcher, 1)
    await submit(journal, dispatcher, 2)
    await asyncio.wait_for(dispatcher.drain(), SETTLE_SECONDS * 2)
    return order


def _set(event: asyncio.Event, order: list[str]):
    async def action() -> None:
        order.append("second started")
        event.set()
    return action
