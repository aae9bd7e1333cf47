"""The connection gate against a running daemon, over real loopback sockets: local clients
are identified by the uid owning their socket (not trusted for being on loopback), each peer
is capped below the global connection limit, and a connection that sends no command is
closed after the greeting timeout.

Tests needing another uid run as root with a throwaway user (support/local_users.py) and
skip otherwise; the others run as any user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
from structlog.testing import capture_logs

from support.local_users import Holder, User
from wodmail import metrics
from wodmail.config import Config
from wodmail.dev.standins.mail_clients import (
    portal_bytes,
    send_netcat_style,
    send_portal_style,
    send_smtplib,
)
from wodmail.intake.hostaddrs import HostAddresses, is_loopback
from wodmail.journal.jobs import Job
from wodmail.journal.store import JournalReader
from wodmail.service import Daemon

PORTAL = "wod@portal.example.org"
LIMIT = 60.0  # generous deadlines: nothing here is timed


def refusals(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("wodmail_smtp_refusals_total", {"reason": reason})
    return value or 0.0


def jobs(config: Config) -> list[Job]:
    return JournalReader(config.journal_path()).list_jobs(newest_first=False)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {LIMIT:g} s: {what}")
        await asyncio.sleep(0.02)


def first_line(sock: socket.socket) -> bytes:
    """The server's first reply line (it sends nothing more before the client speaks)."""
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def transcript_of(port: int, host: str = "127.0.0.1") -> bytes:
    """Connect, send nothing, read everything until the server closes."""
    with socket.create_connection((host, port), timeout=LIMIT) as sock:
        return until_closed(sock)


@contextmanager
def connections(port: int, count: int, host: str = "127.0.0.1") -> Iterator[
        list[tuple[socket.socket, bytes]]]:
    """`count` connections held open, each with its first reply line."""
    with ExitStack() as stack:
        held = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection((host, port), timeout=LIMIT))
            held.append((sock, first_line(sock)))
        yield held


def refusal_summary(daemon: Daemon) -> dict[str, int]:
    """The gate's burst summary, logged now: refusal kind -> count."""
    assert daemon.gate is not None
    with capture_logs() as logged:
        daemon.gate.refused.flush()
    [summary] = [entry for entry in logged if entry["event"].startswith("connections refused")]
    return dict(summary["by"])


async def order_from_root(port: int, student: int = 6) -> tuple[int, bytes, float]:
    started = time.monotonic()
    code, reply = await asyncio.to_thread(send_smtplib, "127.0.0.1", port,
                                          f"CLEANUP {student} 0", "WKSHP-API101", sender=PORTAL)
    return code, reply, time.monotonic() - started


# -- who may connect -----------------------------------------------------------------------


async def test_a_student_gets_554_at_connect_with_its_uid_in_the_log(
    make_config, start_daemon, throwaway_user: User
):
    # The attack: any student with a terminal types the portal's address as sender.
    config = make_config(allowed_senders=[PORTAL])
    daemon = await start_daemon(config)
    refused_before = refusals("user")
    student = Holder(throwaway_user, daemon.port, 1)
    try:
        uid, replies = await asyncio.to_thread(student.replies)
    finally:
        student.close()
    assert uid == throwaway_user.uid
    assert replies == [f"554 5.7.1 local user uid {uid} may not send orders (listen.local_users)"]
    assert refusals("user") == refused_before + 1
    assert refusal_summary(daemon) == {
        f"127.0.0.1 uid {uid} ({throwaway_user.name}): not in listen.local_users": 1}
    # root (here also wodmail's own user) still gets its order in
    code, reply, _ = await order_from_root(daemon.port)
    assert (code, reply) == (250, b"2.0.0 OK job 1")
    assert [job.subject for job in jobs(config)] == ["CLEANUP 6 0"]


async def test_a_user_named_in_local_users_may_connect(
    make_config, start_daemon, throwaway_user: User
):
    daemon = await start_daemon(make_config(listen={
        "host": "127.0.0.1", "port": 0, "local_users": [throwaway_user.name]}))
    admin = Holder(throwaway_user, daemon.port, 1)
    try:
        _uid, replies = await asyncio.to_thread(admin.replies)
    finally:
        admin.close()
    assert replies[0].startswith("220 ")
    # root is no longer in the list: it is refused like anyone else not named
    reply = await asyncio.to_thread(transcript_of, daemon.port)
    assert reply == b"554 5.7.1 local user uid 0 may not send orders (listen.local_users)\r\n"


async def test_own_user_is_refused_when_not_listed(make_config, start_daemon):
    # Runs as any user: list only a uid that is not ours, and our own connection is refused.
    other = 1 if os.geteuid() != 1 else 2
    config = make_config(allowed_senders=[PORTAL],
                         listen={"host": "127.0.0.1", "port": 0, "local_users": [other]})
    daemon = await start_daemon(config)
    transcript = await asyncio.to_thread(transcript_of, daemon.port)
    assert transcript == (f"554 5.7.1 local user uid {os.geteuid()} may not send orders "
                          "(listen.local_users)\r\n").encode()
    # No session: an order sent at once (as the portal sends) is not even read.
    await asyncio.to_thread(send_portal_style, "127.0.0.1", daemon.port, "CLEANUP 6 0",
                            "WKSHP-API101", sender=PORTAL)
    assert jobs(config) == []


@pytest.mark.parametrize("hang_up", ["close", "reset"])
async def test_a_local_client_gone_before_it_is_identified_is_refused(
    make_config, start_daemon, hang_up
):
    # The order is complete in the server's kernel, but the client closed (its socket then
    # shows uid 0) or reset (no socket left) before wodmail could ask who it was.
    config = make_config(allowed_senders=[PORTAL])
    daemon = await start_daemon(config)
    before = refusals("user")
    # Without awaiting: the daemon's loop (this one) cannot accept before the client is gone.
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=LIMIT) as sock:
        sock.sendall(portal_bytes("CLEANUP 6 0", "WKSHP-API101", sender=PORTAL))
        if hang_up == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await until(lambda: refusals("user") > before, "the connection refused")
    [(key, count)] = refusal_summary(daemon).items()
    assert key.startswith("127.0.0.1: local client not identified: ") and count == 1
    # an identified client right after is served
    code, reply, _ = await order_from_root(daemon.port, student=7)
    assert (code, [job.subject for job in jobs(config)]) == (250, ["CLEANUP 7 0"])


def _host_address() -> str | None:
    addresses = HostAddresses()
    try:
        found = sorted(str(a) for a in addresses.current() if a.version == 4
                       and not is_loopback(a))
    finally:
        addresses.close()
    return found[0] if found else None


async def test_a_client_on_this_hosts_own_address_is_identified_too(make_config, start_daemon):
    # wodmail listening on all addresses, the backend's own address in allowed_networks
    # (as a portal on the same network would be): a local process connecting to it is
    # still judged by its uid, not by the network.
    address = _host_address()
    if address is None:
        pytest.skip("this host has no IPv4 address besides loopback")
    other = 1 if os.geteuid() != 1 else 2
    daemon = await start_daemon(make_config(
        allowed_networks=[f"{address}/32"],
        listen={"host": "0.0.0.0", "port": 0, "local_users": [other]}))
    transcript = await asyncio.to_thread(transcript_of, daemon.port, address)
    assert transcript.startswith(f"554 5.7.1 local user uid {os.geteuid()} ".encode())
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert list(refusal_summary(daemon)) == [
        f"{address} uid {os.geteuid()} ({me}): not in listen.local_users"]


# -- how many at once ----------------------------------------------------------------------


async def test_connections_over_the_per_uid_cap_get_421(make_config, start_daemon):
    daemon = await start_daemon(make_config(
        listen={"host": "127.0.0.1", "port": 0, "max_connections_per_uid": 3}))
    before = refusals("peer_capacity")

    def over_the_cap() -> tuple[list[bytes], bytes, bytes]:
        with connections(daemon.port, 3) as held, connections(daemon.port, 1) as extra:
            greetings = [reply[:4] for _sock, reply in held]
            refused = extra[0][1]
            held[0][0].close()  # one slot freed once the server sees the close
            deadline = time.monotonic() + LIMIT
            while time.monotonic() < deadline:
                with connections(daemon.port, 1) as again:
                    if again[0][1].startswith(b"220"):
                        return greetings, refused, again[0][1]
            return greetings, refused, b"(no slot came free)"

    greetings, refused, again = await asyncio.to_thread(over_the_cap)
    assert greetings == [b"220 "] * 3
    assert refused == (f"421 4.7.0 too many connections from uid {os.geteuid()} "
                       "(listen.max_connections_per_uid 3), try again later\r\n").encode()
    assert again.startswith(b"220 ")
    assert refusals("peer_capacity") >= before + 1


async def test_an_allowed_peer_holding_300_idle_connections_does_not_block_another(
    make_config, start_daemon, throwaway_user: User
):
    # Two allowed local users: one (a runaway script, say) holds 300 idle connections; the
    # other's order still goes in, because each uid gets at most max_connections_per_uid.
    config = make_config(allowed_senders=[PORTAL], listen={
        "host": "127.0.0.1", "port": 0, "local_users": ["root", throwaway_user.name]})
    daemon = await start_daemon(config)
    cap = config.listen.max_connections_per_uid
    hog = Holder(throwaway_user, daemon.port, 300)
    try:
        _uid, replies = await asyncio.to_thread(hog.replies)
        code, reply, seconds = await order_from_root(daemon.port)
    finally:
        hog.close()
    print(f"root's order while another uid holds {cap} sessions and was refused "
          f"{300 - cap} more: {seconds * 1000:.0f} ms")
    assert sum(r.startswith("220 ") for r in replies) == cap
    assert replies[cap:] == [f"421 4.7.0 too many connections from uid {throwaway_user.uid} "
                             f"(listen.max_connections_per_uid {cap}), try again later"] * (
                                 300 - cap)
    assert (code, reply) == (250, b"2.0.0 OK job 1")


# -- the greeting timeout -------------------------------------------------------------------


async def test_a_connection_sending_no_command_is_closed_with_421(make_config, start_daemon):
    config = make_config(listen={"host": "127.0.0.1", "port": 0,
                                 "greeting_timeout_seconds": 2})
    daemon = await start_daemon(config)
    before = refusals("timeout")

    def sessions() -> tuple[bytes, bytes]:
        with (
            socket.create_connection(("127.0.0.1", daemon.port), timeout=LIMIT) as talker,
            talker.makefile("rb") as replies,
        ):
            talker.sendall(b"EHLO client.example.org\r\n")  # at once, as clients may
            while not replies.readline().startswith(b"250 "):  # the 220, the EHLO lines
                pass
            # A connection opened after the EHLO, closed by the greeting timeout: by then
            # the talker has been idle longer than that too, and must still be served.
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=LIMIT) as idle:
                idle_transcript = until_closed(idle)
            talker.sendall(b"NOOP\r\n")
            return idle_transcript, replies.readline()

    idle_transcript, noop = await asyncio.to_thread(sessions)
    greeting, timeout, *rest = idle_transcript.split(b"\r\n")
    assert greeting.startswith(b"220 ") and rest == [b""]
    assert timeout.startswith(b"421 4.4.2 ") and timeout.endswith(
        b" no command within 2 s, closing")
    assert noop.startswith(b"250 ")
    assert refusals("timeout") == before + 1
    # The portal (sends without waiting for the greeting) and the netcat tool (no HELO)
    # start at once: the short timeout does not touch them.
    await asyncio.to_thread(send_portal_style, "127.0.0.1", daemon.port, "CREATE 3 11",
                            "WKSHP-API101")
    netcat = await asyncio.to_thread(send_netcat_style, "127.0.0.1", daemon.port,
                                     "CREATE 4 0", "WKSHP-API101")
    assert b"250 2.0.0 OK job 2" in netcat
    await until(lambda: len(jobs(config)) == 2, "both orders journaled")
