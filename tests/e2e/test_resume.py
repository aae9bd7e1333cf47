"""Resume, not redo: an order interrupted mid-way runs again without repeating what a
participant or a peer has already seen (issue: a re-run re-wiped a home after `active`,
sent `active` twice, and overwrote a CLEANUP's completion figure with 0).

The daemon runs in-process on a sandbox (real files, real `chpasswd -R` on a sandbox root,
stand-in portal and hub over loopback) and is stopped with no grace mid-order, which cancels
the order where it stands, as a crash would leave it (the SIGKILL version of this is
tests/e2e/test_crash_stream.py). A stand-in holds one chosen request until the test releases it,
so the interruption lands at a known step.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support.e2e import hub_calls, portal_writes, shadow_matches
from wodmail.cli import render_job
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox
from wodmail.dev.standins._base import StandinRequest, StandinServer
from wodmail.journal.jobs import JobState

WS = SAMPLE_WORKSHOP
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chpasswd -R and chown need root")


class Hold:
    """Holds the stand-in's requests that `matches` (before they are handled) until released."""

    def __init__(self, standin: StandinServer, matches: Callable[[StandinRequest], bool]) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()
        handle = standin._handle

        def held(request: StandinRequest) -> Any:
            if matches(request) and not self.released.is_set():
                self.reached.set()
                self.released.wait(60)
            return handle(request)

        standin._handle = held  # type: ignore[method-assign]

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, 30), "the held request never came"


def put_of(field: str) -> Callable[[StandinRequest], bool]:
    return lambda request: request.method == "PUT" and f'"{field}"'.encode() in request.body


def execute_first_cell(notebook: Path) -> None:
    data = json.loads(notebook.read_text())
    next(c for c in data["cells"] if c["cell_type"] == "code")["execution_count"] = 1
    notebook.write_text(json.dumps(data))


def forget_step(sandbox: Sandbox, job_id: int, name: str) -> None:
    """As if the daemon died between a call and the commit of its record."""
    with sqlite3.connect(sandbox.root / "state" / "journal.sqlite3") as conn:
        gone = conn.execute("DELETE FROM steps WHERE job_id = ? AND name = ?", (job_id, name))
        assert gone.rowcount == 1


@needs_root
@pytest.mark.parametrize("record_lost", [False, True], ids=["recorded", "in-doubt"])
async def test_create_interrupted_after_active_is_neither_redeployed_nor_announced_again(
    sandbox, backend, record_lost
):
    hub_start = Hold(sandbox.hub, lambda request: request.method == "POST")
    first = await backend()
    await first.send("CREATE 4 4", WS)
    await hub_start.wait_reached()  # `active` went out; the order waits for the hub
    home = sandbox.home(4)
    (home / "my-work.txt").write_text("the participant started")  # they are in
    deployed = (home / WS / "0-ReadMeFirst.ipynb").stat().st_ino
    password = first.jobs()[0].result["password"]
    await first.stop(grace=0)
    if record_lost:
        forget_step(sandbox, 1, "portal customer/4 active")
    hub_start.released.set()

    second = await backend()
    job = await second.wait(1)
    assert job.state is JobState.DONE, job.reason
    assert job.attempts == 2
    assert (home / "my-work.txt").read_text() == "the participant started"
    assert (home / WS / "0-ReadMeFirst.ipynb").stat().st_ino == deployed
    actives = [w for w in portal_writes(sandbox) if w[2] == {"active": True}]
    assert actives == [("PUT", "/api/customer/4", {"active": True})]
    assert job.result["password"] == password
    assert shadow_matches(sandbox.accounts_root, "student4", password)
    names = [step["name"] for step in job.result["steps"]]
    assert not any(name.startswith(("wipe-home", "deploy", "hooks")) for name in names)
    assert sandbox.hub.is_running("student4")
    shown = render_job(job.to_public())  # `wodmail show`
    if not record_lost:
        assert "- portal customer/4 active: resumed (done by an earlier run)" in shown


@needs_root
async def test_create_resumed_after_active_with_the_hub_down_ends_done(sandbox, backend):
    # The participant was told `active` before the crash: a hub down at the restart must not
    # fail the order (README: hub failure after active), nor its preflight check.
    hub_start = Hold(sandbox.hub, lambda request: request.method == "POST")
    first = await backend()
    await first.send("CREATE 3 3", WS)
    await hub_start.wait_reached()
    await first.stop(grace=0)
    sandbox.hub.set_down(True)
    hub_start.released.set()
    second = await backend(dispatch={"retry_deadline_seconds": 1})
    job = await second.wait(1)
    assert job.state is JobState.DONE, job.reason
    assert job.result["warnings"][0].startswith("hub start: ")
    assert [w for w in portal_writes(sandbox) if w[2] == {"active": True}] == [
        ("PUT", "/api/customer/3", {"active": True})]


@needs_root
async def test_create_interrupted_before_its_home_was_ready_rebuilds_it_whole(sandbox, backend):
    # Nobody was told anything yet: the half-made home is wiped and deployed again.
    portal_password = Hold(sandbox.portal, put_of("password"))
    first = await backend()
    await first.send("CREATE 5 5", WS)
    await portal_password.wait_reached()
    await first.stop(grace=0)
    portal_password.released.set()
    second = await backend()
    job = await second.wait(1)
    assert job.state is JobState.DONE, job.reason
    statuses = {step["name"]: step["status"] for step in job.result["steps"]}
    assert statuses["set-password student5"] == "resumed"
    assert "wipe-home student5" not in statuses  # the home was ready: not touched again
    assert [w for w in portal_writes(sandbox) if w[2] == {"active": True}] == [
        ("PUT", "/api/customer/5", {"active": True})]


@needs_root
async def test_create_interrupted_mid_deploy_redoes_the_whole_home_block(
    tmp_path, sandbox, backend
):
    gate = tmp_path / "gate"
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    hook = scripts / f"post-copy-{WS}.sh"
    hook.write_text(f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n")
    hook.chmod(0o755)
    first = await backend(scripts={"private": str(scripts)})
    await first.send("CREATE 6 6", WS)
    while not (sandbox.home(6) / WS).exists():  # noqa: ASYNC110 - the deploy is under way
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    await first.stop(grace=0)
    (sandbox.home(6) / "half-made").write_text("left by the interrupted run")
    gate.write_text("open")
    second = await backend(scripts={"private": str(scripts)})
    job = await second.wait(1)
    assert job.state is JobState.DONE, job.reason
    assert not (sandbox.home(6) / "half-made").exists()  # wiped again: nobody used it yet
    names = [step["name"] for step in job.result["steps"]]
    assert "wipe-home student6" in names and "deploy" in names
    assert len([w for w in portal_writes(sandbox) if w[2] == {"active": True}]) == 1


@needs_root
@pytest.mark.parametrize("record_lost", [False, True], ids=["recorded", "in-doubt"])
async def test_cleanup_interrupted_after_the_wipe_keeps_its_completion_figure(
    sandbox, backend, record_lost
):
    wod = await backend()
    created = await wod.order("CREATE 2 2", WS)
    assert created.state is JobState.DONE, created.reason
    execute_first_cell(sandbox.home(2) / WS / "0-ReadMeFirst.ipynb")  # 1 of 3 code cells
    sandbox.clear_calls()
    cleaned = Hold(sandbox.portal, put_of("cleaned"))
    await wod.send("CLEANUP 2 2", WS)
    await cleaned.wait_reached()  # the home is wiped by now; `cleaned` is on its way
    assert not (sandbox.home(2) / WS).exists()
    await wod.stop(grace=0)
    if record_lost:  # died between the wipe and its record
        forget_step(sandbox, 2, "wipe-home student2")
    cleaned.released.set()  # the portal handles the first `cleaned` after all

    second = await backend()
    job = await second.wait(2)
    assert job.state is JobState.DONE, job.reason
    figures = [w[2] for w in portal_writes(sandbox) if "completionPercentage" in (w[2] or {})]
    assert figures == [{"completionPercentage": 33}]  # never measured again from a wiped home
    assert job.result["completion"] == 33
    assert sandbox.portal.customer(2)["completionPercentage"] == 33
    assert [w for w in portal_writes(sandbox) if w[2] == {"cleaned": True}] == [
        ("PUT", "/api/customer/2", {"cleaned": True})]
    assert hub_calls(sandbox).count(("DELETE", "/hub/api/users/student2/server")) == 1


async def test_prune_deletes_the_step_records_of_the_orders_it_deletes(tmp_path):
    import time

    from wodmail.journal.store import Arrival, Journal, JournalAdmin, StepRecord
    from wodmail.orders import Mode, Order, Verb

    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    try:
        ids = []
        for student in (1, 2):
            order = Order(verb=Verb.CREATE, student=student, customer=student, workshop=WS,
                          content=WS, mode=Mode.WKSHP)
            job_id = (await journal.accept(order, Arrival("127.0.0.1", "a@b"))).job_id
            now = time.time()
            await journal.record_step(StepRecord(job_id, "home ready", "done", now, now, 1, {}),
                                      {})
            ids.append(job_id)
        await journal.finish(ids[0], JobState.DONE, result={})
    finally:
        journal.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE orders SET finished_at = finished_at - 40 * 86400 WHERE id = ?",
                     (ids[0],))
    JournalAdmin(path).prune(30 * 86400, 0)
    assert [step.job_id for step in JournalAdmin(path).steps(ids[1])] == [ids[1]]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT job_id FROM steps").fetchall() == [(ids[1],)]
