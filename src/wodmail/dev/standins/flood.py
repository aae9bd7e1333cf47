"""A hostile client: many idle connections from one address, against a real `wodmail serve`.

Used by the connection-flood tests and `bench/flood.py`: the daemon runs as a subprocess
with a given open-file limit (as systemd's LimitNOFILE would set it), the flood comes from a
second loopback address (127.0.0.2 on Linux, outside an allow-list of 127.0.0.1/32) or, as
another local user, from a child process under that uid (`IdleHolder`, root only), and an
allowed client then sends one order; what it measured is returned.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wodmail.dev.processes import stop_process
from wodmail.dev.standins.mail_clients import send_smtplib

OUTSIDE_ADDRESS = "127.0.0.2"
START_TIMEOUT_SECONDS = 60.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    def status_port(self) -> int:
        """The status listener's port, as its start line in the log says."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if '"status listener"' in line:
                    return int(json.loads(line)["url"].rstrip("/").rsplit(":", 1)[1])
            time.sleep(0.05)
        raise RuntimeError("no status listener in the log")


def _limit_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def _listening_port(log: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"wodmail listening"' in line:
                return int(json.loads(line)["port"])
        if process.poll() is not None:
            raise RuntimeError(f"wodmail serve exited early:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"wodmail serve did not listen within {START_TIMEOUT_SECONDS:g} s")


@contextmanager
def serve(
    folder: Path, config: dict[str, Any], *, open_files: int | None = None
) -> Iterator[Server]:
    """`wodmail serve` on `config` (port 0) in a subprocess; SIGTERM and wait at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "wodmail.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = folder / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "wodmail.cli", "serve", "--config", str(config_file)],
            stdout=sink,
            stderr=sink,
            preexec_fn=None if open_files is None else lambda: _limit_files(open_files),
        )
    try:
        yield Server(process, _listening_port(log, process), log)
    finally:
        stop_process(process, grace=60)


def raise_own_file_limit(wanted: int) -> bool:
    """Raise this process's soft open-file limit to `wanted` if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return True
    if hard != resource.RLIM_INFINITY and hard < wanted:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return True


def outside_address_usable() -> bool:
    """Whether this machine can connect from 127.0.0.2 (Linux routes all of 127/8 locally)."""
    try:
        with socket.socket() as sock:
            sock.bind((OUTSIDE_ADDRESS, 0))
        return True
    except OSError:
        return False


@contextmanager
def idle_connections(port: int, count: int, source: str = OUTSIDE_ADDRESS) -> Iterator[int]:
    """Opens `count` connections from `source` that never send a byte; yields how many
    connected (a refused connect is counted out, not raised)."""
    with ExitStack() as stack:
        connected = 0
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.settimeout(10)
            sock.bind((source, 0))
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                continue
            connected += 1
        yield connected


@dataclass(frozen=True)
class OrderUnderFlood:
    code: int
    reply: bytes
    seconds: float  # connect to the reply of DATA


def order_from_allowed_client(port: int, student: int = 1) -> OrderUnderFlood:
    started = time.monotonic()
    code, reply = send_smtplib("127.0.0.1", port, f"CREATE {student} 0", "WKSHP-API101")
    return OrderUnderFlood(code, reply, time.monotonic() - started)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# Runs as the other user: stdlib only (the caller's virtualenv may sit where that user cannot
# read). Opens COUNT connections one after the other, reads each one's first reply line,
# prints them as JSON, then holds every connection until its stdin closes.
_HOLDER = r"""
import json, os, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
held, replies = [], []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    held.append(sock)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    replies.append(reply.decode("ascii", "replace").strip())
print(json.dumps({"uid": os.getuid(), "replies": replies}), flush=True)
sys.stdin.read()
"""


def python_for_others() -> str:
    """A Python 3 any user may run: the system's, else the one this virtualenv is made from
    (the virtualenv itself may sit in a folder only root can enter)."""
    return (shutil.which("python3", path="/usr/bin:/bin")
            or getattr(sys, "_base_executable", None) or sys.executable)


class IdleHolder:
    """A child process running as `uid`/`gid` (setpriv; the caller must be root) that opens
    `count` connections to `port` on 127.0.0.1 and holds them, sending nothing."""

    def __init__(self, uid: int, gid: int, port: int, count: int) -> None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                python_for_others(), "-c", _HOLDER, str(port), str(count)]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd="/")

    def replies(self, limit: float = START_TIMEOUT_SECONDS) -> tuple[int, list[str]]:
        """Waits until every connection is open: (the child's uid, each one's first reply)."""
        assert self.process.stdout is not None and self.process.stderr is not None
        ready, _, _ = select.select([self.process.stdout], [], [], limit)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.process.kill()
            raise RuntimeError(f"the idle holder failed: {self.process.stderr.read()!r}")
        found = json.loads(line)
        return int(found["uid"]), [str(reply) for reply in found["replies"]]

    def close(self) -> None:
        """Lets go of the connections and waits for the child to end."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            stop_process(self.process, grace=1)
