"""Admin commands on a running daemon: `wodmail retry`, `cancel`, `prune`, and a re-sent
order whose earlier copy failed. The CLI and the daemon share only the journal on disk."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from wodmail import cli
from wodmail.config import Config
from wodmail.dev.standins.mail_clients import send_smtplib
from wodmail.dispatch.dispatcher import JobContext
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import Arrival, Journal, JournalReader
from wodmail.orders import Mode, Order, Verb

WS = "WKSHP-API101"


def config_file(config: Config, tmp_path: Path) -> str:
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump({"state_dir": str(config.state_dir)}))
    return str(path)


async def until(check: Callable[[], Any], what: str, limit: float = 30) -> Any:
    deadline = time.monotonic() + limit
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {limit} s")
        await asyncio.sleep(0.02)
    return value


def last_error(capsys) -> str:
    """The CLI's own message: the last stderr line (the daemon in this process logs there too)."""
    return capsys.readouterr().err.splitlines()[-1]


def job_in(config: Config, job_id: int) -> Job:
    job = JournalReader(config.journal_path()).get(job_id)
    assert job is not None
    return job


async def send(port: int, subject: str, **kw: Any) -> tuple[int, bytes]:
    return await asyncio.to_thread(send_smtplib, "127.0.0.1", port, subject, WS, **kw)


async def test_retry_runs_a_failed_order_again_as_a_new_attempt(
    make_config, start_daemon, tmp_path, capsys
):
    config = make_config()
    runs: list[int] = []

    async def fails_once(job: Job, ctx: JobContext) -> dict:
        runs.append(job.id)
        if len(runs) == 1:
            raise RuntimeError("hub start: JupyterHub: 503")
        return {"steps": []}

    daemon = await start_daemon(config, fails_once)
    await send(daemon.port, "CREATE 4 825")
    await until(lambda: job_in(config, 1).state is JobState.FAILED, "failed")
    assert cli.main(["retry", "1", "--config", config_file(config, tmp_path)]) == 0
    assert "job 1 queued again as attempt 2" in capsys.readouterr().out
    job = await until(lambda: (j := job_in(config, 1)).state is JobState.DONE and j, "done")
    assert runs == [1, 1]
    assert job.attempts == 2 and job.reason is None
    first, second = job.attempt_log
    assert (first["trigger"], first["outcome"], first["reason"]) == (
        "received", "failed", "hub start: JupyterHub: 503")
    assert (second["trigger"], second["outcome"]) == ("retry", "done")
    assert cli.main(["show", "1", "--config", config_file(config, tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "1. (received) failed" in shown and "hub start: JupyterHub: 503" in shown
    assert "2. (retry) done" in shown
    # The count and the log of attempts are two lines with two names.
    assert shown.count("attempts:") == 1 and "  attempt log:" in shown


async def test_retry_refuses_what_cannot_run_again(make_config, start_daemon, tmp_path, capsys):
    config = make_config()
    daemon = await start_daemon(config)
    await send(daemon.port, "CREATE 4 825")
    await send(daemon.port, "CREATE 99 825")  # refused: outside the range
    await until(lambda: job_in(config, 1).state is JobState.DONE, "done")
    path = config_file(config, tmp_path)
    assert cli.main(["retry", "1", "--config", path]) == 1
    assert last_error(capsys) == (
        "wodmail: job 1 is done: only a failed or cancelled order can be retried")
    assert cli.main(["retry", "2", "--config", path]) == 1
    assert last_error(capsys).startswith("wodmail: job 2 was refused (")
    assert cli.main(["retry", "7", "--config", path]) == 1
    assert last_error(capsys) == "wodmail: no job 7"


async def test_cancel_stops_a_queued_order_but_not_a_running_one(
    make_config, start_daemon, tmp_path, capsys
):
    config = make_config()
    release = asyncio.Event()
    runs: list[int] = []

    async def slow(job: Job, ctx: JobContext) -> dict:
        runs.append(job.id)
        await release.wait()
        return {"steps": []}

    daemon = await start_daemon(config, slow)
    await send(daemon.port, "CREATE 4 825")
    await send(daemon.port, "CLEANUP 4 825")  # queued behind job 1 in student 4's lane
    await until(lambda: job_in(config, 1).state is JobState.RUNNING, "running")
    path = config_file(config, tmp_path)
    assert cli.main(["cancel", "1", "--config", path]) == 1
    assert last_error(capsys).startswith("wodmail: job 1 is running")
    assert cli.main(["cancel", "2", "--config", path]) == 0
    assert capsys.readouterr().out == "job 2 cancelled: it will not run\n"
    release.set()
    await until(lambda: job_in(config, 1).state is JobState.DONE, "done")
    await daemon.dispatcher.drain()
    cancelled = job_in(config, 2)
    assert (cancelled.state, cancelled.reason) == (JobState.CANCELLED, "cancelled by an admin")
    assert runs == [1] and cancelled.attempts == 0
    # A cancelled order can still be run, on purpose.
    assert cli.main(["retry", "2", "--config", path]) == 0
    await until(lambda: job_in(config, 2).state is JobState.DONE, "done")
    assert runs == [1, 2]


async def test_a_resent_order_whose_first_copy_failed_runs_again(make_config, start_daemon):
    config = make_config()
    runs: list[int] = []

    async def fails_once(job: Job, ctx: JobContext) -> dict:
        runs.append(job.id)
        if len(runs) == 1:
            raise RuntimeError("portal down")
        return {"steps": []}

    daemon = await start_daemon(config, fails_once)
    assert await send(daemon.port, "CREATE 4 825", message_id="<m1@portal>") == (
        250, b"2.0.0 OK job 1")
    await until(lambda: job_in(config, 1).state is JobState.FAILED, "failed")
    assert await send(daemon.port, "CREATE 4 825", message_id="<m1@portal>") == (
        250, b"2.0.0 OK job 2")
    await until(lambda: job_in(config, 2).state is JobState.DONE, "done")
    # A copy of an order that is done is still a duplicate.
    assert await send(daemon.port, "CREATE 4 825", message_id="<m1@portal>") == (
        250, b"2.0.0 OK duplicate of job 2")
    assert runs == [1, 2]


def order(student: int) -> Order:
    return Order(verb=Verb.CREATE, student=student, customer=0, workshop=WS, content=WS,
                 mode=Mode.WKSHP)


async def test_prune_deletes_old_finished_orders_and_caps_refusals_per_peer(
    make_config, tmp_path, capsys
):
    config = make_config(max_refusals_per_peer=3)
    journal = Journal(config.journal_path(), refusals_per_peer=3)
    try:
        done = (await journal.accept(order(1), Arrival("127.0.0.1", "a@b"))).job_id
        await journal.finish(done, JobState.DONE, result={})
        queued = (await journal.accept(order(2), Arrival("127.0.0.1", "a@b"))).job_id
        refused = [await journal.reject(f"no {n}", Arrival("10.0.0.9", "x@y")) for n in range(5)]
        other = await journal.reject("no", Arrival("10.0.0.7", "x@y"))
        recent = (await journal.accept(order(3), Arrival("127.0.0.1", "a@b"))).job_id
        await journal.finish(recent, JobState.FAILED, result={}, reason="x")
    finally:
        journal.close()
    remaining = [job.id for job in JournalReader(config.journal_path()).list_jobs()]
    assert refused[:2] not in remaining and refused[2:] == sorted(set(refused) & set(remaining))
    # Age the first order and the other peer's refusal by 40 days.
    with sqlite3.connect(config.journal_path()) as conn:
        conn.execute("UPDATE orders SET finished_at = finished_at - 40 * 86400,"
                     " received_at = received_at - 40 * 86400 WHERE id IN (?, ?)", (done, other))
        for job in (done, recent):
            conn.execute("INSERT INTO steps (job_id, name, state) VALUES (?, 'deploy', 'done')",
                         (job,))
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump({"state_dir": str(config.state_dir),
                                    "max_refusals_per_peer": 2}))
    assert cli.main(["prune", "--older-than", "30", "--config", str(path)]) == 0
    assert capsys.readouterr().out == (
        "2 orders finished more than 30 days ago will be deleted (1 done, 1 rejected)\n"
        "2 orders finished more than 30 days ago deleted (1 done, 1 rejected); "
        "1 refusals over the 2 kept per client deleted\n")
    left = sorted(job.id for job in JournalReader(config.journal_path()).list_jobs())
    assert left == sorted([queued, recent, *refused[3:]])
    with sqlite3.connect(config.journal_path()) as conn:
        assert conn.execute("SELECT job_id FROM steps").fetchall() == [(recent,)]
    with pytest.raises(SystemExit) as usage:
        cli.main(["prune", "--older-than", "-1", "--config", str(path)])
    assert usage.value.code == 2
    assert "days must be 0 or more" in capsys.readouterr().err


async def _one_done_order(config: Any, tmp_path: Path) -> tuple[int, Path]:
    """A journal holding one done order, and a config file naming its state dir."""
    journal = Journal(config.journal_path())
    try:
        done = (await journal.accept(order(1), Arrival("127.0.0.1", "a@b"))).job_id
        await journal.finish(done, JobState.DONE, result={})
    finally:
        journal.close()
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump({"state_dir": str(config.state_dir)}))
    return done, path


async def test_prune_of_every_finished_order_wants_a_yes(make_config, tmp_path, capsys):
    config = make_config()
    done, path = await _one_done_order(config, tmp_path)
    # No terminal (pytest's stdin is not one) and no --yes: it says what it would delete,
    # deletes nothing and says how to go on.
    assert cli.main(["prune", "--older-than", "0", "--config", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == "1 orders finished more than 0 days ago will be deleted (1 done)\n"
    assert "nothing deleted" in out.err and "--yes" in out.err
    assert [job.id for job in JournalReader(config.journal_path()).list_jobs()] == [done]
    assert cli.main(["prune", "--older-than", "0", "--yes", "--config", str(path)]) == 0
    assert JournalReader(config.journal_path()).list_jobs() == []


async def test_prune_asks_on_a_terminal(make_config, tmp_path):
    config = make_config()
    done, path = await _one_done_order(config, tmp_path)
    # A real terminal (a pty) on stdin: the admin is asked and answers.
    for answer, left in ((b"n\n", 1), (b"y\n", 0)):
        out, err = await asyncio.to_thread(_prune_on_a_terminal, path, answer)
        assert b"Delete every finished order? [y/N]" in out
        assert len(JournalReader(config.journal_path()).list_jobs()) == left, err


def _prune_on_a_terminal(config: Path, answer: bytes) -> tuple[bytes, bytes]:
    main, child = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "wodmail", "prune", "--older-than", "0",
             "--config", str(config)],
            stdin=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        os.write(main, answer)
        return process.communicate(timeout=120)
    finally:
        os.close(main)
        os.close(child)
