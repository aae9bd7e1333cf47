"""A private Postfix on a loopback port, its queue in a temp folder: the intake bench's
baseline for durable intake (Postfix's cleanup fsyncs each queue file before the 250).

It needs root (Postfix's master runs as root and its daemons as `postfix`) and Debian's
`postfix` package (`apt-get install postfix`; preseed `postfix/main_mailer_type` to
`No configuration` so that the system's own instance is left unconfigured). The host's
instance, if any, is not touched: this one has its own config directory, queue, data
directory, lock and port. Mail is accepted for `backend.example.org` from loopback and
delivered to Postfix's `discard` transport (queued durably, then removed by qmgr, as a
procmail delivery would do after the 250).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DOMAIN = "backend.example.org"
START_SECONDS = 60.0


def missing() -> str | None:
    """Why no Postfix can run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("postfix") is None or shutil.which("postconf") is None:
        return "Debian's postfix package is not installed (apt-get install postfix)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def version() -> str:
    out = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def main_cf(folder: Path) -> str:
    return "\n".join([
        "compatibility_level = 3.6",
        f"queue_directory = {folder / 'queue'}",
        f"data_directory = {folder / 'data'}",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        f"myhostname = {DOMAIN}",
        f"mydestination = {DOMAIN}",
        "mynetworks = 127.0.0.0/8",
        "local_recipient_maps =",
        "alias_maps =",
        "alias_database =",
        "local_transport = discard:",
        "default_transport = discard:",
        "relay_transport = discard:",
        # Logged as on a backend (syslog there), to a file here: no /dev/log in containers.
        f"maillog_file = {folder / 'maillog'}",
        f"maillog_file_prefixes = {folder}",
        "",
    ])


def master_cf(port: int) -> str:
    """Debian's master.cf with the smtp service on our port, and postlogd for the log."""
    lines = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        if line.startswith("smtp ") and " inet " in line:
            line = f"{HOST}:{port} inet n - n - - smtpd"
        if line.startswith("postlog "):
            continue
        lines.append(line)
    lines.append("postlog unix-dgram n - n - 1 postlogd")
    return "\n".join(lines) + "\n"


@dataclass
class PostfixServer:
    folder: Path
    port: int
    master_pid: int

    def cpu_seconds(self) -> float:
        """CPU of the whole instance: master and the children it reaped (`cutime`), and its
        live daemons (smtpd, cleanup, qmgr, discard, postlogd...)."""
        total = _cpu(self.master_pid, with_reaped=True)
        for pid in _children(self.master_pid):
            total += _cpu(pid, with_reaped=True)
        return total

    def delivered(self) -> int:
        """Mails the discard transport took (each was queued and fsynced first)."""
        try:
            text = (self.folder / "maillog").read_text(errors="replace")
        except OSError:
            return 0
        return text.count("status=sent")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _cpu(pid: int, *, with_reaped: bool) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _postfix(folder: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["postfix", "-c", str(folder / "conf"), *command],
                          capture_output=True, text=True, check=False)


@asynccontextmanager
async def postfix_server() -> AsyncIterator[PostfixServer]:
    """Starts an instance in a temp folder of its own (the `postfix` user must be able to
    walk into it), yields it once its port answers, stops it and removes the folder."""
    with tempfile.TemporaryDirectory(prefix="wodmail-bench-postfix-") as name:
        folder = Path(name)
        port = _start(folder)
        try:
            master_pid = await _wait_ready(folder, port)
            yield PostfixServer(folder, port, master_pid)
        finally:
            _postfix(folder, "stop")
            await _wait_stopped(folder)


def _start(folder: Path) -> int:
    """Writes the instance's files and starts it; returns its port."""
    folder.chmod(0o755)  # the postfix user walks into queue/ and data/
    for name in ("conf", "queue", "data"):
        (folder / name).mkdir(exist_ok=True)
    shutil.chown(folder / "data", "postfix")
    port = free_port()
    (folder / "conf" / "main.cf").write_text(main_cf(folder))
    (folder / "conf" / "master.cf").write_text(master_cf(port))
    started = _postfix(folder, "start")
    if started.returncode != 0:
        log = (folder / "maillog").read_text() if (folder / "maillog").exists() else ""
        raise RuntimeError(f"postfix did not start: {started.stdout}{started.stderr}{log}"[-2000:])
    return port


async def _wait_ready(folder: Path, port: int) -> int:
    deadline = time.monotonic() + START_SECONDS
    pid_file = folder / "queue" / "pid" / "master.pid"
    while time.monotonic() < deadline:
        try:
            _reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return int(pid_file.read_text().split()[0])
    raise RuntimeError(f"postfix did not answer on {HOST}:{port} within {START_SECONDS:g} s")


async def _wait_stopped(folder: Path) -> None:
    pid_file = folder / "queue" / "pid" / "master.pid"
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return
        await asyncio.sleep(0.1)
