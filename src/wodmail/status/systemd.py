"""wodmail under systemd: the notify protocol and socket activation.

Notify (sd_notify(3)) is a few datagrams to $NOTIFY_SOCKET:

`READY=1`, `RELOADING=1` (with `MONOTONIC_USEC`, as `Type=notify-reload` wants), `STOPPING=1`,
`STATUS=...` and `WATCHDOG=1`. The socket is a filesystem path or, starting with `@`, an
abstract one. Without $NOTIFY_SOCKET (not under systemd) every call does nothing. A failed
send is logged once and never stops the daemon: the service works without its supervisor.

Our own few lines rather than a library: the protocol is one `sendto` of `KEY=VALUE` lines,
and the maintained Python bindings (python-systemd) need libsystemd headers to build.

Socket activation (sd_listen_fds(3)): with `wodmail.socket`, systemd owns port 10025 and
passes it to the daemon as descriptor 3 ($LISTEN_FDS, $LISTEN_PID): connections that arrive
while wodmail restarts wait in the socket's backlog instead of being refused.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between two WATCHDOG=1 (half of WatchdogSec), or None when there is none."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by a wrapper)
    return int(usec) / 2_000_000


class Notifier:
    """Sends notify messages to the service manager, if there is one."""

    def __init__(self, address: str | None) -> None:
        """`address`: the socket (a path, or `@name`); None: a notifier that does nothing."""
        self.address = address
        self._socket: socket.socket | None = None
        self._failed = False
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get(NOTIFY_SOCKET) or None)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram of `KEY=VALUE` lines; True when it was sent."""
        if self._socket is None or self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            self._socket.sendto(message.encode(), _address(self.address))
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager", socket=self.address,
                            error=str(exc))
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec, STATUS="reloading the configuration")

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# -- socket activation ----------------------------------------------------------------------

FIRST_FD = 3  # SD_LISTEN_FDS_START


def inherited_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets passed to this process, if any; the variables are then removed so that
    hooks started later do not believe they were passed sockets too."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = env.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not count.isdigit():
        return []
    sockets = []
    for fd in range(FIRST_FD, FIRST_FD + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets
