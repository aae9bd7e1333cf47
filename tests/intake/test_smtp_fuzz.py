"""Hypothesis-driven SMTP sessions against a real daemon: random command sequences, line
endings, garbage and disconnects (clean close, half-close, reset) at random points.

After every session: the server still greets a new client; every `250 ... job N` the client
read is a job in the journal that is not a refusal (never acknowledged without being
journaled); nothing was written outside the state dir (the journal) and the students dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wodmail.config import Config, parse_config
from wodmail.dispatch.dispatcher import noop_runner
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader
from wodmail.service import Daemon

ORDER = "Subject: CREATE {s} {c}\n\nWKSHP-API101\n"
COMMANDS = st.one_of(
    st.sampled_from([
        b"HELO fuzz.example.org", b"EHLO fuzz.example.org", b"HELO", b"EHLO",
        b"MAIL FROM:<wod@example.org>", b"MAIL FROM:<>", b"MAIL FROM:<x@evil.net>",
        b"MAIL FROM:wod@example.org SIZE=100", b"MAIL FROM:<wod@example.org> BODY=8BITMIME",
        b"MAIL FROM:", b"RCPT TO:<w@backend>", b"RCPT TO:", b"RCPT TO:<a@b> NOTIFY=NEVER",
        b"DATA", b"RSET", b"NOOP", b"VRFY x", b"HELP", b"QUIT", b"STARTTLS", b"AUTH PLAIN",
        b"BDAT 10", b"", b".", b"..", b"\x00\xff\xfe", b"MAIL FROM:<" + b"a" * 2000 + b"@b>",
    ]),
    st.builds(lambda s, c: ORDER.format(s=s, c=c).encode() + b".",
              st.integers(-2, 25), st.integers(0, 3)),
    st.binary(max_size=80),
)
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r", b""])


@st.composite
def sessions(draw: st.DrawFn) -> tuple[bytes, int | None, str]:
    lines = draw(st.lists(st.tuples(COMMANDS, ENDINGS), max_size=25))
    data = b"".join(command + ending for command, ending in lines)
    cut = draw(st.one_of(st.none(), st.integers(0, max(len(data), 0))))
    ending = draw(st.sampled_from(["close", "half-close", "reset", "read-all"]))
    return data, cut, ending


class ThreadedDaemon:
    """A real daemon on its own event loop in a thread (hypothesis drives sync tests)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.daemon = Daemon(config, noop_runner)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.daemon.start(), self.loop).result(60)
        self.port = self.daemon.port

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.daemon.stop(grace=5), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture
def fuzzed(tmp_path: Path, notebooks: Path) -> Iterator[ThreadedDaemon]:
    students = tmp_path / "students"
    students.mkdir()
    config = parse_config({
        "listen": {"host": "127.0.0.1", "port": 0, "max_connections": 16},
        "state_dir": str(tmp_path / "state"),
        "students_dir": str(students),
        "notebooks": {"public": str(notebooks)},
        "allowed_senders": ["wod@example.org"],
        "max_message_bytes": 2048,
    }, "fuzz")
    daemon = ThreadedDaemon(config)
    yield daemon
    daemon.close()


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, float]:
    return {str(path): path.stat().st_mtime for path in root.rglob("*")
            if not any(path.is_relative_to(s) for s in skip)}


def _play(port: int, data: bytes, cut: int | None, ending: str) -> bytes:
    sent = data if cut is None else data[:cut]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(sent)
        if ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return b""
        if ending == "close":
            return b""
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        if ending == "half-close":
            return b""
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def _greets(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        return sock.recv(4)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(session=sessions())
def test_random_sessions_never_crash_nor_acknowledge_unjournaled(fuzzed, tmp_path, session):
    data, cut, ending = session
    config = fuzzed.config
    before = _snapshot(tmp_path, (config.state_dir, config.students_dir))
    transcript = _play(fuzzed.port, data, cut, ending)
    assert _greets(fuzzed.port) == b"220 "  # still serving
    reader = JournalReader(config.journal_path())
    for job_id in re.findall(rb"250 2\.0\.0 OK (?:duplicate of )?job (\d+)", transcript):
        job = reader.get(int(job_id))
        assert job is not None, f"acknowledged job {job_id} is not in the journal"
        assert job.state is not JobState.REJECTED
    for job_id in re.findall(rb"55\d [^\r\n]*\(job (\d+)\)", transcript):
        job = reader.get(int(job_id))
        assert job is not None and job.state is JobState.REJECTED
    assert _snapshot(tmp_path, (config.state_dir, config.students_dir)) == before
