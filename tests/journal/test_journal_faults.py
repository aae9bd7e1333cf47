"""The journal under attack: removed or replaced while the daemon runs, a full disk in the
middle of an order, random bytes where the journal should be.

What a user notices: no 250 for an order that a restart would not find (451 instead, and a
log line saying why), the outcome of an order recorded once the disk has room again (never
`running` until a restart, never "Task exception was never retrieved"), and one readable
line, not a traceback, from `wodmail serve` and `wodmail jobs` on a corrupt journal.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wodmail.dev.standins.mail_clients import send_smtplib
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import Arrival, Journal, JournalReader, JournalUnreadable
from wodmail.logs import configure_logging
from wodmail.orders import Mode, Order, Verb


@pytest.fixture(autouse=True)
def json_logs() -> None:
    """The daemon's own log format on stderr, as `wodmail serve` writes it."""
    configure_logging()


def send(port: int, subject: str) -> tuple[int, bytes]:
    return send_smtplib("127.0.0.1", port, subject, "WKSHP-API101")


async def asend(port: int, subject: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(send, port, subject)


async def until(condition: Any, limit: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never met"
        await asyncio.sleep(0.02)


def job(path: Path, job_id: int) -> Job | None:
    return JournalReader(path).get(job_id)


# -- removed or replaced ----------------------------------------------------------------------


@pytest.mark.parametrize("what", ["database", "all-files", "replaced"])
async def test_no_250_once_the_journal_is_no_longer_the_one_opened(
    make_config, start_daemon, tmp_path, capsys, what
):
    config = make_config()
    daemon = await start_daemon(config)
    path = config.journal_path()
    assert await asend(daemon.port, "CREATE 1 0") == (250, b"2.0.0 OK job 1")
    if what == "database":
        path.unlink()
    elif what == "all-files":
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            (path.parent / name).unlink()
    else:  # moved aside and another journal put in its place
        path.rename(tmp_path / "moved.sqlite3")
        Journal(path).close()
    code, reply = await asend(daemon.port, "CREATE 2 0")
    assert code == 451, reply
    assert b"could not record the order" in reply
    err = capsys.readouterr().err
    assert "journal write failed; order not acknowledged" in err
    assert "was removed" in err or "was replaced" in err


# -- a full disk mid-order --------------------------------------------------------------------


class SmallDisk:
    """A real, small filesystem for the state dir (a 16 MB tmpfs), filled with a file until
    writes fail with ENOSPC, then freed. Mounting needs root: without it the test skips (a
    simulation at the SQLite layer would not fail the same writes a full disk fails)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        state.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                               str(state)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")

    def fill(self) -> None:
        chunk = b"\0" * 65536
        with open(self.state / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(chunk)
            except OSError:
                pass
        for size in (4096, 512, 1):  # the last crumbs too: no page is left for the WAL
            try:
                with open(self.state / f"filler-{size}", "wb", buffering=0) as crumbs:
                    while True:
                        crumbs.write(b"\0" * size)
            except OSError:
                pass

    def free(self) -> None:
        for filler in self.state.glob("filler*"):
            filler.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.state)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    if os.getuid() != 0:
        pytest.skip("mounting a small tmpfs for the state dir needs root")
    disk = SmallDisk(tmp_path / "state")
    yield disk
    disk.close()


async def test_a_full_disk_mid_order_delays_its_outcome_never_loses_it(
    make_config, start_daemon, small_disk, capsys
):
    gate = asyncio.Event()

    async def runner(job: Job, ctx: Any) -> dict[str, Any]:
        await gate.wait()
        return {"summary": f"order {job.id} did its work", "steps": []}

    config = make_config(state_dir=str(small_disk.state))
    daemon = await start_daemon(config, runner)
    path = config.journal_path()
    assert await asend(daemon.port, "CREATE 1 0") == (250, b"2.0.0 OK job 1")
    await until(lambda: job(path, 1).state is JobState.RUNNING)

    small_disk.fill()
    code, _ = await asend(daemon.port, "CREATE 2 0")
    assert code == 451  # not acknowledged: it could not be recorded
    gate.set()  # the order ends while its outcome cannot be written
    await until(lambda: "journal write failed; will retry" in capsys.readouterr().err)
    assert job(path, 1).state is JobState.RUNNING

    small_disk.free()
    await until(lambda: job(path, 1).state is JobState.DONE)
    assert job(path, 1).result["summary"] == "order 1 did its work"
    assert (await asend(daemon.port, "CREATE 3 0"))[0] == 250  # room again: orders taken
    assert "Task exception was never retrieved" not in capsys.readouterr().err


# -- random bytes -----------------------------------------------------------------------------


def corrupt_whole(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def corrupt_pages(path: Path) -> None:
    """A real journal with many orders, then random bytes over its pages (header kept)."""
    async def fill() -> None:
        journal = Journal(path)
        try:
            for n in range(200):
                order = Order(verb=Verb.CREATE, student=n % 20 + 1, customer=n,
                              workshop="WKSHP-API101", content="WKSHP-API101", mode=Mode.WKSHP)
                await journal.accept(order, Arrival("127.0.0.1", "a@b", b"x" * 500))
        finally:
            journal.close()

    asyncio.run(fill())
    with open(path, "r+b") as handle:
        handle.seek(4096)
        handle.write(os.urandom(os.path.getsize(path) - 4096))


@pytest.mark.parametrize("damage", [corrupt_whole, corrupt_pages], ids=["random", "pages"])
def test_a_corrupt_journal_is_one_line_from_serve_and_jobs(tmp_path, notebooks, damage):
    state = tmp_path / "state"
    state.mkdir()
    damage(state / "journal.sqlite3")
    config = tmp_path / "wodmail.yml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": 0}, "state_dir": str(state),
        "notebooks": {"public": str(notebooks)},
    }))
    for command in (["serve"], ["jobs"], ["jobs", "--json"], ["show", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", "wodmail.cli", *command, "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )
        lines = [line for line in done.stderr.splitlines() if line.startswith("wodmail:")]
        assert done.returncode == 1, (command, done.stderr)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert len(lines) == 1, (command, done.stderr)
        assert "journal" in lines[0] and str(state / "journal.sqlite3") in lines[0]
        assert "malformed" in lines[0] or "not a database" in lines[0], lines[0]


def test_the_reader_names_the_file_on_random_bytes(tmp_path):
    path = tmp_path / "journal.sqlite3"
    corrupt_whole(path)
    with pytest.raises(JournalUnreadable, match="is unreadable: file is not a database"):
        JournalReader(path).list_jobs()
