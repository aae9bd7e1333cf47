"""The SMTP layer against the real clients' behaviour, over real sockets on 127.0.0.1.

The clients are replayed byte for byte as ORDERS.md ("How the clients talk") describes them:
the portal (one bare-LF burst, hangs up on the first byte of the greeting), the old admin
tool (netcat, no HELO) and ordinary mail software (smtplib, a pipelining client).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import smtplib
import socket
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from wodmail.intake.smtp import OrderSMTP, create_server_factory, start_server

HOST = "127.0.0.1"
DEADLINE_SECONDS = 20.0  # only so that a broken server fails the test instead of hanging it

PORTAL_BURST = (
    b"HELO api.example.org\n"
    b"MAIL FROM: sender@example.org\n"
    b"RCPT TO: wodadmin@backend.example.org\n"
    b"DATA\n"
    b"Subject: CREATE 401 825 jane@example.com\n"
    b"WKSHP-API101\n"
    b".\n"
)
PORTAL_CONTENT = b"Subject: CREATE 401 825 jane@example.com\nWKSHP-API101\n"

NETCAT_SESSION = (
    b"MAIL FROM: sender@example.org\n"
    b"RCPT TO: wodadmin@backend\n"
    b"DATA\n"
    b"Subject: CREATE 121 0\n"
    b"\n"
    b"WKSHP-API101\n"
    b".\n"
    b"QUIT\n"
)


@dataclass(frozen=True)
class Delivery:
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    content: bytes | None


class RecordingHandler:
    """An aiosmtpd handler that records what reaches it, like the intake's journal would."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.delivered: list[Delivery] = []
        self.incomplete: list[Delivery] = []
        self.oversize: list[tuple[Delivery, int]] = []
        self._recorded = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)  # stands for the journal commit
        self.delivered.append(_snapshot(envelope))
        self._recorded.set()
        return f"250 OK job {len(self.delivered)}"

    async def handle_OVERSIZE(self, server: Any, session: Any, envelope: Any, size: int) -> None:
        self.oversize.append((_snapshot(envelope), size))
        self._recorded.set()

    async def handle_INCOMPLETE(self, server: Any, session: Any, envelope: Any) -> None:
        self.incomplete.append(_snapshot(envelope))
        self._recorded.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE_SECONDS):
            while not condition():
                self._recorded.clear()
                await self._recorded.wait()


def _snapshot(envelope: Any) -> Delivery:
    return Delivery(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content)


StartServer = Callable[..., Awaitable[int]]


@pytest.fixture
async def start_smtp() -> AsyncIterator[StartServer]:
    servers: list[asyncio.base_events.Server] = []

    async def start(
        handler: Any, *, data_size_limit: int = 65536, idle_timeout: float = 300.0
    ) -> int:
        server = await start_server(
            handler,
            HOST,
            0,
            data_size_limit=data_size_limit,
            hostname="backend.test",
            idle_timeout=idle_timeout,
        )
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def portal_client(port: int, burst: bytes = PORTAL_BURST, *, reset: bool = False) -> bytes:
    """The portal: one write, read the first byte of the greeting, hang up.

    With `reset`, SO_LINGER 0 makes the close a TCP reset instead of a FIN.
    """
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, port))
        await loop.sock_sendall(sock, burst)
        first = await asyncio.wait_for(loop.sock_recv(sock, 1), DEADLINE_SECONDS)
        if reset:
            _reset_on_close(sock)
    return first


def _reset_on_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _unacknowledged_bytes(sock: socket.socket) -> int:
    return int(struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0])


async def _until_acknowledged(sock: socket.socket) -> None:
    """Wait until the server's kernel has acknowledged every byte sent (send queue empty).

    A reset discards what is still in the client's own send queue; such bytes never reach
    the server, so a test about the server must not race them.
    """
    async with asyncio.timeout(DEADLINE_SECONDS):
        while _unacknowledged_bytes(sock):  # noqa: ASYNC110 - polls the kernel: no event exists
            await asyncio.sleep(0.001)


async def converse(port: int, sent: bytes, *, half_close: bool = True) -> list[bytes]:
    """Write everything at once, then read the replies until the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(sent)
    await writer.drain()
    if half_close:
        writer.write_eof()
    async with asyncio.timeout(DEADLINE_SECONDS):
        received = await reader.read()
    writer.close()
    await writer.wait_closed()
    return received.splitlines()


def reply_codes(lines: list[bytes]) -> list[bytes]:
    """The final line code of each reply (continuation lines `250-...` left out)."""
    return [line[:3] for line in lines if line[3:4] != b"-"]


# --- the portal ------------------------------------------------------------------------


async def test_portal_burst_is_delivered_exactly(
    start_smtp: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    handler = RecordingHandler()
    port = await start_smtp(handler)

    assert await portal_client(port) == b"2"
    await handler.wait_for(lambda: len(handler.delivered) == 1)

    assert handler.delivered == [
        Delivery("sender@example.org", ("wodadmin@backend.example.org",), PORTAL_CONTENT)
    ]
    assert handler.incomplete == []
    # The replies nobody read were dropped quietly: no warning, no traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_portal_200_orders_in_a_row_all_delivered(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    for _ in range(200):
        await portal_client(port)
    await handler.wait_for(lambda: len(handler.delivered) >= 200)

    assert len(handler.delivered) == 200
    assert {d.content for d in handler.delivered} == {PORTAL_CONTENT}


async def test_portal_50_concurrent_clients_all_delivered(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)
    bursts = [PORTAL_BURST.replace(b"401 825", f"401 {n}".encode()) for n in range(50)]

    await asyncio.gather(*(portal_client(port, burst) for burst in bursts))
    await handler.wait_for(lambda: len(handler.delivered) >= 50)

    subjects = sorted(d.content.split(b"\n")[0] for d in handler.delivered if d.content)
    expected = sorted(f"Subject: CREATE 401 {n} jane@example.com".encode() for n in range(50))
    assert subjects == expected


async def test_portal_with_slow_handler_still_delivers(
    start_smtp: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    handler = RecordingHandler(delay=0.05)
    port = await start_smtp(handler)

    await asyncio.gather(*(portal_client(port) for _ in range(5)))
    await handler.wait_for(lambda: len(handler.delivered) >= 5)

    assert len(handler.delivered) == 5
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_client_resetting_after_complete_burst_is_delivered(
    start_smtp: StartServer,
) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    await portal_client(port, reset=True)
    await handler.wait_for(lambda: len(handler.delivered) == 1)

    assert handler.delivered[0].content == PORTAL_CONTENT


async def test_every_complete_transaction_of_a_burst_is_delivered(
    start_smtp: StartServer,
) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)
    second = PORTAL_BURST.replace(b"HELO api.example.org\n", b"").replace(b"825", b"826")
    unfinished = b"MAIL FROM: sender@example.org\nRCPT TO: wodadmin@backend\nDATA\nSubject: CRE"

    await portal_client(port, PORTAL_BURST + second + unfinished, reset=True)
    await handler.wait_for(lambda: len(handler.incomplete) == 1)

    assert [d.content for d in handler.delivered] == [
        PORTAL_CONTENT,
        PORTAL_CONTENT.replace(b"825", b"826"),
    ]
    assert handler.incomplete[0].content == b"Subject: CRE"


async def test_reset_while_server_busy_with_the_burst_loses_nothing_received(
    start_smtp: StartServer,
) -> None:
    # The server is still in its (slow) handler with reading paused, the rest of the burst is
    # in its kernel, when the reset comes: the failed reply must not throw those bytes away.
    handler = RecordingHandler(delay=0.05)
    port = await start_smtp(handler)
    orders = [PORTAL_BURST.replace(b"825", str(n).encode()) for n in range(40)]
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (HOST, port))
        await loop.sock_sendall(sock, b"".join(orders[:20]))
        await asyncio.wait_for(loop.sock_recv(sock, 1), DEADLINE_SECONDS)
        await handler.wait_for(lambda: len(handler.delivered) >= 1)
        await loop.sock_sendall(sock, b"".join(orders[20:]))
        await _until_acknowledged(sock)
        _reset_on_close(sock)
    await handler.wait_for(lambda: len(handler.delivered) >= 40)

    assert [d.content for d in handler.delivered] == [
        PORTAL_CONTENT.replace(b"825", str(n).encode()) for n in range(40)
    ]


# --- end of input mid-transaction --------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "partial_content"),
    [
        (
            b"MAIL FROM: a@example.org\nRCPT TO: b@example.org\nDATA\nSubject: x\nbody\n",
            b"Subject: x\nbody\n",
        ),
        (b"MAIL FROM: a@example.org\nRCPT TO: b@example.org\n", None),
    ],
    ids=["in-data", "before-data"],
)
async def test_transaction_cut_by_eof_is_reported_not_delivered(
    start_smtp: StartServer, sent: bytes, partial_content: bytes | None
) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    await converse(port, sent)
    await handler.wait_for(lambda: len(handler.incomplete) == 1)

    assert handler.delivered == []
    assert handler.incomplete == [Delivery("a@example.org", ("b@example.org",), partial_content)]


async def test_idle_client_mid_transaction_is_timed_out_and_reported(
    start_smtp: StartServer,
) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler, idle_timeout=0.2)

    replies = await converse(port, b"MAIL FROM:<a@example.org>\n", half_close=False)

    assert reply_codes(replies) == [b"220", b"250"]  # then the server hung up
    await handler.wait_for(lambda: len(handler.incomplete) == 1)
    assert handler.incomplete == [Delivery("a@example.org", (), None)]


async def test_eof_between_transactions_reports_nothing(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    replies = await converse(port, NETCAT_SESSION.replace(b"QUIT\n", b""))

    assert reply_codes(replies) == [b"220", b"250", b"250", b"354", b"250"]
    assert len(handler.delivered) == 1
    assert handler.incomplete == []


# --- the old admin tool ----------------------------------------------------------------


async def test_netcat_session_without_helo(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    replies = await converse(port, NETCAT_SESSION, half_close=False)

    assert reply_codes(replies) == [b"220", b"250", b"250", b"354", b"250", b"221"]
    assert replies[4] == b"250 OK job 1"
    assert handler.delivered == [
        Delivery(
            "sender@example.org",
            ("wodadmin@backend",),
            b"Subject: CREATE 121 0\n\nWKSHP-API101\n",
        )
    ]


@pytest.mark.parametrize(
    "mail_from",
    [b"MAIL FROM:<x@example.org>", b"MAIL FROM: x@example.org", b"MAIL FROM:x@example.org"],
)
async def test_mail_from_with_or_without_brackets_and_space(
    start_smtp: StartServer, mail_from: bytes
) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    replies = await converse(port, mail_from + b"\nRCPT TO:<y@example.org>\nDATA\nbody\n.\nQUIT\n")

    assert reply_codes(replies) == [b"220", b"250", b"250", b"354", b"250", b"221"]
    assert handler.delivered == [Delivery("x@example.org", ("y@example.org",), b"body\n")]


# --- DATA framing ----------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
async def test_dot_stuffed_lines_are_unstuffed(start_smtp: StartServer, eol: bytes) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)
    stuffed = [b"Subject: dots", b"", b"..hidden", b"...", b"a . in the middle", b"."]
    commands = [b"HELO client", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>", b"DATA"]

    await converse(port, eol.join([*commands, *stuffed, b"QUIT"]) + eol)

    assert [d.content for d in handler.delivered] == [
        eol.join([b"Subject: dots", b"", b".hidden", b"..", b"a . in the middle"]) + eol
    ]


async def test_mixed_line_endings_are_kept_as_received(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)
    content = b"Subject: mixed\r\nWKSHP-API101\nsecond line\r\n"

    await converse(
        port, b"MAIL FROM:a@example.org\nRCPT TO:b@example.org\nDATA\n" + content + b".\r\n"
    )

    assert [d.content for d in handler.delivered] == [content]


async def test_long_data_lines_are_accepted_whole(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)
    long_line = b"." + b"x" * 5000 + b"\n"

    await converse(
        port, b"MAIL FROM:a@example.org\nRCPT TO:b@example.org\nDATA\n" + long_line + b".\n"
    )

    assert [d.content for d in handler.delivered] == [long_line[1:]]


async def test_oversize_message_refused_with_limit_and_session_continues(
    start_smtp: StartServer,
) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler, data_size_limit=100)
    too_big = b"Subject: big\n\n" + b"y" * 200 + b"\n"
    envelope = b"MAIL FROM:<a@example.org>\nRCPT TO:<b@example.org>\nDATA\n"

    replies = await converse(port, envelope + too_big + b".\n" + envelope + b"small\n.\nQUIT\n")

    assert reply_codes(replies) == b"220 250 250 354 552 250 250 354 250 221".split()
    refusal = next(line for line in replies if line.startswith(b"552"))
    assert b"100-byte limit" in refusal
    assert handler.oversize == [(Delivery("a@example.org", ("b@example.org",), None), len(too_big))]
    assert [d.content for d in handler.delivered] == [b"small\n"]


async def test_overlong_command_line_gets_500_and_session_continues(
    start_smtp: StartServer,
) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    replies = await converse(port, b"NOOP " + b"z" * 2000 + b"\nNOOP\nQUIT\n")

    assert reply_codes(replies) == [b"220", b"500", b"250", b"221"]


# --- ordinary mail software ------------------------------------------------------------


def _smtplib_session(port: int) -> tuple[dict[str, str], list[tuple[int, bytes]]]:
    """EHLO, a MIME message, RSET, NOOP and a second message on one connection."""
    order = EmailMessage()
    order["From"] = "Admin <admin@example.org>"
    order["To"] = "wodadmin@backend.example.org"
    order["Subject"] = "CLEANUP 7 0"
    order["Message-ID"] = "<order-7@example.org>"
    order.set_content("WKSHP-Docker101\n.starts with a dot\n", cte="quoted-printable")
    results: list[tuple[int, bytes]] = []
    with smtplib.SMTP(HOST, port, timeout=DEADLINE_SECONDS) as client:
        client.ehlo("relay.example.org")
        features = dict(client.esmtp_features)
        client.send_message(order)
        results.append(client.noop())
        client.mail("someone@example.org")
        results.append(client.rset())
        client.sendmail(
            "admin@example.org", ["wodadmin@backend"], b"Subject: RESET 3 0\r\n\r\nx\r\n"
        )
    return features, results


async def test_smtplib_ehlo_several_transactions_rset_noop(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)

    features, results = await asyncio.to_thread(_smtplib_session, port)

    assert {"pipelining", "8bitmime", "smtputf8", "size"} <= features.keys()
    assert features["size"] == "65536"
    assert [code for code, _ in results] == [250, 250]
    assert [d.rcpt_tos for d in handler.delivered] == [
        ("wodadmin@backend.example.org",),
        ("wodadmin@backend",),
    ]
    first, second = (d.content or b"" for d in handler.delivered)
    assert b"\r\nMessage-ID: <order-7@example.org>\r\n" in first
    assert b"\r\n.starts with a dot\r\n" in first
    assert second == b"Subject: RESET 3 0\r\n\r\nx\r\n"


async def test_pipelined_client_gets_every_reply_in_order(start_smtp: StartServer) -> None:
    handler = RecordingHandler()
    port = await start_smtp(handler)
    pipelined = (
        b"EHLO relay.example.org\r\n"
        b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
        b"RCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: PURGE 9 0\r\n\r\nWKSHP-K8S101 \xc3\xa9\r\n.\r\n"
        b"QUIT\r\n"
    )

    replies = await converse(port, pipelined, half_close=False)

    assert b"250-PIPELINING" in replies
    assert reply_codes(replies) == b"220 250 250 250 250 354 250 221".split()
    assert handler.delivered == [
        Delivery(
            "a@example.org",
            ("b@example.org", "c@example.org"),
            b"Subject: PURGE 9 0\r\n\r\nWKSHP-K8S101 \xc3\xa9\r\n",
        )
    ]


# --- shutdown -------------------------------------------------------------------------


async def test_shutdown_can_wait_for_sessions_still_draining() -> None:
    handler = RecordingHandler(delay=0.3)
    factory = create_server_factory(handler, data_size_limit=65536, hostname="backend.test")
    server = await asyncio.get_running_loop().create_server(factory, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])

    await portal_client(port)
    server.close()
    await server.wait_closed()
    left = await factory.wait_finished(grace=DEADLINE_SECONDS)

    assert left == 0
    assert [d.content for d in handler.delivered] == [PORTAL_CONTENT]


async def test_shutdown_ends_idle_sessions_at_once() -> None:
    handler = RecordingHandler()
    factory = create_server_factory(handler, data_size_limit=65536, hostname="backend.test")
    server = await asyncio.get_running_loop().create_server(factory, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])
    reader, writer = await asyncio.open_connection(HOST, port)
    assert (await reader.readline()).startswith(b"220")
    writer.write(b"EHLO client.test\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    server.close()
    # The idle client holds its session open; a shutdown ends it instead of waiting for it.
    left = await factory.wait_finished(grace=DEADLINE_SECONDS)
    assert left == 0
    assert await reader.read() == b""  # the server closed the connection
    writer.close()
    await server.wait_closed()


async def test_shutdown_before_a_session_is_connected_ends_it_on_arrival() -> None:
    factory = create_server_factory(RecordingHandler(), data_size_limit=65536, hostname="x")
    session = factory()  # accepted by the kernel, its connection not yet made
    assert await factory.wait_finished(grace=DEADLINE_SECONDS) == 0
    server = await asyncio.get_running_loop().create_server(lambda: session, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])
    reader, writer = await asyncio.open_connection(HOST, port)
    assert (await reader.readline()).startswith(b"220")
    assert await reader.read() == b""  # ended straight after its greeting
    writer.close()
    server.close()
    await server.wait_closed()


# --- configuration errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "error"), [(0, ValueError), (-5, ValueError), ("64k", TypeError)]
)
def test_bad_size_limit_is_refused_clearly(limit: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="data_size_limit"):
        create_server_factory(RecordingHandler(), data_size_limit=limit, hostname="x")


# --- the per-connection shortcuts give what stock aiosmtpd computes -----------------------

_ADDRESS_PIECES = st.sampled_from(
    ["a", "b.c", "x", "@", "<", ">", " ", "\t", ".", "..", "-", "SIZE=10", "BODY=8BITMIME",
     '"', "(c)", "é", "+tag", "_", "=", "1", "example.org", "[1.2.3.4]", "!", "~"]
)


class _NullHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


async def test_hook_tables_match_stock():
    ours, stock = OrderSMTP(_NullHandler(), hostname="x"), SMTP(_NullHandler(), hostname="x")
    assert sorted(ours._smtp_methods) == sorted(stock._smtp_methods)
    assert sorted(ours._auth_methods) == sorted(stock._auth_methods)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_ADDRESS_PIECES, max_size=8).map("".join))
def test_address_parsing_matches_stock(arg: str) -> None:
    session = _protocol()

    def outcome(parse: Any) -> Any:
        try:
            return parse(arg)
        except Exception as error:  # stock aiosmtpd raises IndexError on some inputs
            return type(error)

    assert outcome(session._getaddr) == outcome(lambda value: SMTP._getaddr(session, value))


@functools.cache
def _protocol() -> OrderSMTP:
    return OrderSMTP(_NullHandler(), hostname="x", loop=asyncio.new_event_loop())
