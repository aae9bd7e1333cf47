"""The notify protocol against real datagram sockets, filesystem and abstract."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from wodmail.status.systemd import Notifier, watchdog_interval


def _receive(sock: socket.socket) -> dict[str, str]:
    sock.settimeout(10)
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_messages_reach_a_filesystem_socket(tmp_path: Path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        notifier = Notifier(str(tmp_path / "notify"))
        assert notifier.ready("listening on 127.0.0.1:10025")
        assert _receive(manager) == {"READY": "1", "STATUS": "listening on 127.0.0.1:10025"}
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        reloading = _receive(manager)
        assert reloading["RELOADING"] == "1"
        # systemd >= 253 (Type=notify-reload) wants the monotonic time of the reload's start.
        assert before <= int(reloading["MONOTONIC_USEC"]) <= before + 60_000_000
        notifier.watchdog()
        assert _receive(manager) == {"WATCHDOG": "1"}
        notifier.stopping("stopping")
        assert _receive(manager) == {"STOPPING": "1", "STATUS": "stopping"}
        notifier.close()


def test_messages_reach_an_abstract_socket():
    name = f"wodmail-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        Notifier("@" + name).status("hello")
        assert _receive(manager) == {"STATUS": "hello"}


def test_without_a_manager_nothing_is_sent_and_nothing_fails(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier.from_environment().ready("x") is False
    # A socket that went away: reported once, never raised.
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.ready("x") is False
    assert gone.watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
