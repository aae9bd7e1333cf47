"""A real `wodmail serve` subprocess under a stand-in service manager: a datagram socket
receiving its sd_notify messages, as systemd's $NOTIFY_SOCKET would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

# What systemd does for a socket unit: the socket as descriptor 3, LISTEN_PID the daemon's
# own pid (exec keeps it).
_ACTIVATE = (
    "import os, sys; os.dup2(int(os.environ['WODMAIL_TEST_FD']), 3); "
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
# Generous: a loaded 2-core machine can take seconds to start Python; nothing here is timed.
LIMIT = 60.0


class NotifySocket:
    """The manager's end of NOTIFY_SOCKET: every datagram, parsed into KEY=VALUE fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def next(self, limit: float = LIMIT) -> dict[str, str]:
        self._sock.settimeout(limit)
        try:
            data = self._sock.recv(4096)
        except TimeoutError:
            raise AssertionError(f"no notify message within {limit} s; seen {self.seen}") from None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.seen.append(fields)
        return fields

    def wait_for(self, key: str, limit: float = LIMIT) -> dict[str, str]:
        """The next message carrying `key` (STATUS-only and WATCHDOG messages pass by)."""
        while True:
            message = self.next(limit)
            if key in message:
                return message

    def close(self) -> None:
        self._sock.close()


class Served:
    """`wodmail serve --config FILE` with NOTIFY_SOCKET set; `port` is read from READY's STATUS."""

    def __init__(
        self, tmp: Path, config: dict[str, Any], *, inherit: socket.socket | None = None,
        **env: str,
    ) -> None:
        """`inherit`: a listening socket handed over as systemd's socket activation does
        (descriptor 3, LISTEN_FDS=1, LISTEN_PID of the daemon)."""
        self.config_path = tmp / "wodmail.yml"
        self.write_config(config)
        self.log_path = tmp / "serve.log"
        self.notify = NotifySocket(tmp / f"notify-{len(list(tmp.glob('notify-*')))}.sock")
        environ = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **env}
        environ.pop("WATCHDOG_PID", None)
        argv = [sys.executable, "-m", "wodmail.cli", "serve", "--config", str(self.config_path)]
        passed: tuple[int, ...] = ()
        if inherit is not None:
            passed = (inherit.fileno(),)
            environ["WODMAIL_TEST_FD"] = str(inherit.fileno())
            argv = [sys.executable, "-c", _ACTIVATE, *argv]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=log, env=environ, pass_fds=passed
            )
        self.port = 0

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        self.config_path.write_text(text)

    def wait_ready(self) -> dict[str, str]:
        ready = self.notify.wait_for("READY")
        match = re.search(r"listening on [^ ]+:(\d+)", ready.get("STATUS", ""))
        assert match, f"READY=1 without the port in its STATUS: {ready}"
        self.port = int(match.group(1))
        return ready

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, limit: float = LIMIT) -> int:
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"wodmail serve still running after {limit} s:\n{self.log()}"
            ) from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
