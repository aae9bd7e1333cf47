"""A smarthost stand-in on loopback, for the relay's tests: a real aiosmtpd server.

It records every mail it accepts (envelope and bytes as received), can refuse with a
reply of your choosing for a number of mails, be down (not started yet: connections are
refused), or hang (`HungSmarthost`: the connection is taken, no greeting ever comes).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # as the client sent it (CRLF), dot-unstuffed
    helo: str | None


class Smarthost:
    """`refuse(reply, times)`: the next `times` mails get `reply` (e.g. a 451) after DATA."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._refusal: str | None = None
        self._refusals_left = 0
        self.refused = 0
        self._controller: Controller | None = None

    def start(self) -> Smarthost:
        self._controller = Controller(self, hostname=LOOPBACK, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def refuse(self, reply: str, times: int) -> None:
        with self._lock:
            self._refusal, self._refusals_left = reply, times

    def mails(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self._refusals_left > 0:
                self._refusals_left -= 1
                self.refused += 1
                assert self._refusal is not None
                return self._refusal
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    content=bytes(envelope.original_content),
                    helo=session.host_name,
                )
            )
            return f"250 2.0.0 Ok: queued as SH{len(self.received)}"


class HungSmarthost:
    """Listens but never accepts: the kernel completes the handshake, no greeting follows."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._sock = socket.create_server((LOOPBACK, self.port), backlog=16)

    def stop(self) -> None:
        self._sock.close()
