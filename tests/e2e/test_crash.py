"""A 250 means the order survives a SIGKILL of the daemon, and runs after the restart;
also in the middle of a burst, where concurrent orders share their commits."""

from __future__ import annotations

import itertools
import os
import signal
import smtplib
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from wodmail.dev.processes import stop_process
from wodmail.dev.standins.mail_clients import send_smtplib
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader

# The first daemon runs orders with a runner that never finishes, so the kill is certain to
# land between the 250 and the end of the order.
STUCK_DAEMON = textwrap.dedent(
    """
    import asyncio, sys
    from wodmail.config import load_config
    from wodmail.logs import configure_logging
    from wodmail.service import Daemon

    async def stuck(job, ctx):
        await asyncio.Event().wait()

    async def main():
        configure_logging()
        daemon = Daemon(load_config(sys.argv[1]), stuck)
        await daemon.start()
        print(daemon.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def write_config(tmp_path: Path, notebooks: Path) -> Path:
    config_path = tmp_path / "wodmail.yml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "listen": {"host": "127.0.0.1", "port": 0},
                "state_dir": str(tmp_path / "state"),
                "notebooks": {"public": str(notebooks)},
            }
        )
    )
    return config_path


def start_stuck_daemon(config_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", STUCK_DAEMON, str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_order_survives_sigkill_after_250(tmp_path: Path, notebooks: Path):
    config_path = write_config(tmp_path, notebooks)
    proc = start_stuck_daemon(config_path)
    try:
        port = int(proc.stdout.readline())
        code, reply = send_smtplib("127.0.0.1", port, "CREATE 7 825", "WKSHP-API101")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert (code, reply) == (250, b"2.0.0 OK job 1")
    journal_path = tmp_path / "state" / "journal.sqlite3"
    job = JournalReader(journal_path).get(1)
    assert job is not None and job.student == 7
    assert not job.state.finished

    # Restart with the real CLI: the order is picked up and run to its end.
    env = {**os.environ}
    server = subprocess.Popen(
        [sys.executable, "-m", "wodmail.cli", "serve", "--config", str(config_path)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = JournalReader(journal_path).get(1)
            if job.state.finished:
                break
            time.sleep(0.05)
    finally:
        stop_process(server, grace=20)
    # It ran again: this sandbox has no student homes, so the real lifecycle fails it, saying so.
    assert job.state is JobState.FAILED
    assert "no home for student7" in (job.reason or "")
    assert job.attempts >= 1


def test_sigkill_mid_burst_loses_no_acknowledged_order(tmp_path: Path, notebooks: Path):
    """16 clients send orders as fast as they get their 250s; the daemon is killed once 60
    were acknowledged, with more in flight. Every order acknowledged is in the journal, once,
    with the job id its 250 named."""
    config_path = write_config(tmp_path, notebooks)
    proc = start_stuck_daemon(config_path)
    acknowledged: dict[int, int] = {}  # customer: job id from its 250
    enough = threading.Event()
    customers = itertools.count(1000)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                customer = next(customers)
            try:
                code, reply = send_smtplib(
                    "127.0.0.1", port, f"CREATE {customer % 20 + 1} {customer}", "WKSHP-API101"
                )
            except (OSError, smtplib.SMTPException):
                return  # the daemon is gone
            if code == 250:
                with lock:
                    acknowledged[customer] = int(reply.rsplit(b" ", 1)[1])
                    if len(acknowledged) >= 60:
                        enough.set()

    try:
        port = int(proc.stdout.readline())
        with ThreadPoolExecutor(16) as pool:
            for _ in range(16):
                pool.submit(client)
            assert enough.wait(120), f"only {len(acknowledged)} orders acknowledged"
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    jobs = JournalReader(tmp_path / "state" / "journal.sqlite3").list_jobs()
    recorded = {job.customer: job.id for job in jobs}
    assert len(recorded) == len(jobs)  # no order twice
    missing = {c: j for c, j in acknowledged.items() if recorded.get(c) != j}
    assert not missing, f"acknowledged but not recorded as such: {missing}"
