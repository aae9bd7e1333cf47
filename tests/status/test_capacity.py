"""The status listener holds its own against idle and slow clients: at most
`status.max_connections` at once (one more gets a 503 and is closed at once), and a
request head must arrive within `status.timeout_seconds` (else a 408 and the close).
A real daemon, real loopback connections; nothing here is timed but the daemon's own
timeout, and every wait is for a condition with a generous deadline."""

from __future__ import annotations

import asyncio
import time

import httpx

from support.status_http import LIMIT, refusals, status_code, status_port
from wodmail.dev.standins.mail_clients import send_smtplib

CAP = 4


async def _wait_for(condition, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {LIMIT:g} s"
        await asyncio.sleep(0.05)


async def _healthz(port: int) -> int:
    async with httpx.AsyncClient(timeout=LIMIT) as client:
        return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code


async def test_over_the_cap_a_connection_is_closed_at_once_and_orders_go_on(
    make_config, start_daemon
):
    daemon = await start_daemon(make_config(
        status={"listen": "127.0.0.1:0", "max_connections": CAP,
                "timeout_seconds": 300}))  # the held ones stay idle
    port = status_port(daemon)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP)]
    await _wait_for(lambda: daemon.status.open == CAP, "holding the idle connections")
    before = refusals("capacity")
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), LIMIT)  # up to the close
        writer.close()
        assert status_code(answer) == 503, answer
        assert b"too many connections (status.max_connections 4)" in answer
    assert refusals("capacity") - before == 50
    assert daemon.status.open == CAP
    # The daemon's real work does not notice: an order still gets its 250.
    code, reply = await asyncio.to_thread(send_smtplib, "127.0.0.1", daemon.port,
                                          "CREATE 1 0", "WKSHP-API101")
    assert (code, reply) == (250, b"2.0.0 OK job 1")
    for _, writer in held:
        writer.close()
    await _wait_for(lambda: daemon.status.open == 0, "releasing the closed connections")
    assert await _healthz(port) == 200


async def test_idle_and_trickling_clients_time_out_and_free_their_slots(
    make_config, start_daemon
):
    daemon = await start_daemon(make_config(
        status={"listen": "127.0.0.1:0", "max_connections": CAP, "timeout_seconds": 2}))
    port = status_port(daemon)
    before = refusals("timeout")
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP - 1)]
    trickled, answer = await _trickle(port)
    assert trickled < 200, "the head was sent whole: the deadline is per read, not per request"
    assert status_code(answer) == 408, answer
    for reader, writer in idle:
        answer = await asyncio.wait_for(reader.read(), LIMIT)
        writer.close()
        assert status_code(answer) == 408
        assert b"the request did not arrive in time (status.timeout_seconds)" in answer
    assert refusals("timeout") - before == CAP
    await _wait_for(lambda: daemon.status.open == 0, "releasing the timed-out connections")
    assert await _healthz(port) == 200


async def _trickle(port: int) -> tuple[int, bytes]:
    """A slowloris: one byte of a long request head at a time, until the listener answers.
    Returns how many bytes were sent, and the answer."""
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"x" * 200 + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read())
    sent = 0
    try:
        deadline = time.monotonic() + LIMIT
        while not answer.done() and sent < len(head) and time.monotonic() < deadline:
            writer.write(head[sent:sent + 1])
            sent += 1
            await asyncio.sleep(0.1)
        return sent, await asyncio.wait_for(answer, LIMIT)
    finally:
        writer.close()
