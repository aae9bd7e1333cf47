"""A 250 means the order survives a SIGKILL of the daemon, and runs after the restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
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


def test_order_survives_sigkill_after_250(tmp_path: Path, notebooks: Path):
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
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_DAEMON, str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
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
