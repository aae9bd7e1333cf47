"""The relay's test helpers: mail sent as the portal sends it, a smarthost stand-in, a
config relaying to it, and polling with a generous bound.

A fixture plugin, registered once in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wodmail.config import Config
from wodmail.dev.standins.smarthost import Smarthost
from wodmail.relay.outbox import list_outbox

PORTAL_SENDER = "sender@example.org"  # the portal's WODSENDER in these tests


def portal_mail(recipient: str, subject: str, content: str,
                sender: str = PORTAL_SENDER) -> bytes:
    """The portal's sendPostfixEmail: HELO, MAIL, RCPT, DATA, Subject, content, '.', bare LF."""
    return (
        "HELO api.example.org\n"
        f"MAIL FROM: {sender}\n"
        f"RCPT TO: {recipient}\n"
        "DATA\n"
        f"Subject: {subject}\n"
        f"{content}\n"
        ".\n"
    ).encode()


def send_raw(port: int, data: bytes) -> bytes:
    """Writes a whole transaction, then reads every reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data + b"QUIT\n")
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


async def eventually(check: Callable[[], Any], what: str, limit: float = 30.0) -> Any:
    """Polls `check` until it returns something truthy (a generous bound, not a timing test)."""
    deadline = time.monotonic() + limit
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def outbox(config: Config) -> list[dict[str, Any]]:
    return list_outbox(config.outbox_path())


@pytest.fixture
def smarthost() -> Iterator[Smarthost]:
    host = Smarthost()
    yield host
    host.stop()


@pytest.fixture
def relay_config(make_config: Callable[..., Config],
                 smarthost: Smarthost) -> Callable[..., Config]:
    """`make(overrides, **relay)`: a config relaying to `smarthost` for PORTAL_SENDER."""

    def make(overrides: dict[str, Any] | None = None, **relay: Any) -> Config:
        settings = {
            "host": "127.0.0.1",
            "port": smarthost.port,
            "order_recipients": ["@backend.example.org", "@backend"],
            "retry_base_seconds": 0.2,
            "retry_max_seconds": 1,
            "timeout_seconds": 5,
            "allowed_senders": [PORTAL_SENDER],
        }
        settings.update(relay)
        return make_config(relay=settings, **(overrides or {}))

    return make
