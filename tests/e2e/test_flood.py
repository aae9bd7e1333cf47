"""Connection floods against a real `wodmail serve` subprocess with systemd's default
open-file limit (1024): the gate refuses at connect, the log stays small, orders still go in.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from wodmail.dev.standins import flood

FLOOD = 1100
OPEN_FILES = 1024


def _config(tmp_path: Path, notebooks: Path, **extra: object) -> dict[str, object]:
    return {
        "listen": {"host": "127.0.0.1", "port": 0},
        "state_dir": str(tmp_path / "state"),
        "notebooks": {"public": str(notebooks)},
        "allowed_networks": ["127.0.0.1/32"],
        **extra,
    }


@pytest.mark.skipif(not flood.outside_address_usable(), reason="cannot bind 127.0.0.2")
def test_idle_flood_from_outside_network_does_not_stop_orders(tmp_path, notebooks):
    if not flood.raise_own_file_limit(FLOOD + 256):
        pytest.skip(f"the hard open-file limit is below {FLOOD + 256}: cannot open the flood")
    config = _config(tmp_path, notebooks)
    with flood.serve(tmp_path / "serve", config, open_files=OPEN_FILES) as server:
        with flood.idle_connections(server.port, FLOOD) as connected:
            assert connected == FLOOD
            order = flood.order_from_allowed_client(server.port)
        print(f"allowed client's order under a flood of {FLOOD}: {order.seconds * 1000:.0f} ms")
        assert (order.code, order.reply) == (250, b"2.0.0 OK job 1")
    lines = server.log_lines()
    # Every line is JSON: no stdlib traceback of a failing accept().
    events = [json.loads(line) for line in lines]
    assert sum(len(line) for line in lines) < 10_000, lines[:20]
    # One summary line per 10 s window of the burst (a loaded machine may need several).
    summaries = [e for e in events if e["event"].startswith("connections refused")]
    assert 1 <= len(summaries) <= 12
    assert sum(summary["count"] for summary in summaries) == FLOOD
    assert {key for summary in summaries for key in summary["by"]} == {
        f"{flood.OUTSIDE_ADDRESS}: not in allowed_networks"}


STATUS_FLOOD = 1000
STATUS_OPEN_FILES = 256


def test_idle_status_connections_cannot_exhaust_descriptors(tmp_path, notebooks):
    """A student's terminal opens 1000 idle connections to the status listener of a daemon
    allowed 256 open files: the listener keeps status.max_connections (16) of them, closes
    the others at once, and orders still get their 250; /healthz answers once the idle ones
    time out (status.timeout_seconds, 5 s)."""
    if not flood.raise_own_file_limit(STATUS_FLOOD + 256):
        pytest.skip(f"the hard open-file limit is below {STATUS_FLOOD + 256}")
    config = _config(tmp_path, notebooks, status={"listen": "127.0.0.1:0"})
    with flood.serve(tmp_path / "serve", config, open_files=STATUS_OPEN_FILES) as server:
        port = server.status_port()
        quiet = _open_files(server.process.pid)
        with flood.idle_connections(port, STATUS_FLOOD, source="127.0.0.1") as connected:
            flooded = _open_files(server.process.pid)
            order = flood.order_from_allowed_client(server.port)
            after_order = _open_files(server.process.pid)
        print(f"status flood of {connected}: daemon files {quiet} -> {flooded}, "
              f"order {order.seconds * 1000:.0f} ms")
        assert connected == STATUS_FLOOD
        assert (order.code, order.reply) == (250, b"2.0.0 OK job 1")
        # The cap's 16, plus a few being refused at that moment: far from the 256 limit.
        assert max(flooded, after_order) <= quiet + 16 + 32, (quiet, flooded, after_order)
        assert _healthz_when_free(port) == 200
    events = [json.loads(line) for line in server.log_lines()]
    summaries = [e for e in events if e["event"].startswith("status listener refusals")]
    assert sum(summary["count"] for summary in summaries) >= STATUS_FLOOD - 16
    assert not [e for e in events if e["event"].startswith("accept() failed")]


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _healthz_when_free(port: int) -> int:
    """/healthz's status, once a connection is served (the idle ones take up to 5 s to go)."""
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60)
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer.status_code
        time.sleep(0.2)


@pytest.mark.skipif(not flood.outside_address_usable(), reason="cannot bind 127.0.0.2")
async def test_outside_peer_gets_554_at_connect(make_config, start_daemon):
    daemon = await start_daemon(make_config(allowed_networks=["127.0.0.1/32"]))

    def greeting() -> bytes:
        with socket.socket() as sock:
            sock.settimeout(10)
            sock.bind((flood.OUTSIDE_ADDRESS, 0))
            sock.connect(("127.0.0.1", daemon.port))
            return sock.recv(4096) + sock.recv(4096)  # the line, then EOF (b"")

    assert await asyncio.to_thread(greeting) == (
        b"554 5.7.1 client 127.0.0.2 is not in allowed_networks\r\n"
    )


async def test_connections_over_the_cap_get_421_and_one_summary(make_config, start_daemon):
    daemon = await start_daemon(make_config(listen={"host": "127.0.0.1", "port": 0,
                                                    "max_connections": 3}))

    def over_the_cap() -> tuple[list[bytes], bytes, bytes]:
        held = [socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
                for _ in range(3)]
        greetings = [sock.recv(4096)[:4] for sock in held]
        extra = [socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
                 for _ in range(5)]
        refused = [sock.recv(4096) for sock in extra]
        for sock in extra:
            sock.close()
        assert len(set(refused)) == 1
        held.pop().close()
        # The slot is released when the server sees the close: a new session then fits.
        deadline_tries = 200
        for _ in range(deadline_tries):
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
                again = sock.recv(4096)
            if again.startswith(b"220"):
                break
        for sock in held:
            sock.close()
        return greetings, refused[0], again

    greetings, refused, again = await asyncio.to_thread(over_the_cap)
    assert greetings == [b"220 "] * 3
    assert refused == (
        b"421 4.7.0 too many connections (listen.max_connections 3), try again later\r\n"
    )
    assert again.startswith(b"220 ")
    assert daemon.gate is not None and daemon.gate.refused.total >= 5


async def test_a_flood_of_refused_mail_from_one_client_is_counted_not_journaled(
    make_config, start_daemon
):
    from wodmail.intake.handler import REFUSALS_RECORDED_AT_ONCE, REFUSALS_RECORDED_PER_SECOND
    from wodmail.journal.store import JournalReader

    config = make_config()
    daemon = await start_daemon(config)
    mails = 2 * REFUSALS_RECORDED_AT_ONCE + 100
    transaction = (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<w@backend>\r\nDATA\r\n"
                   b"Subject: hello\r\n\r\nnot an order\r\n.\r\n")

    def flood_session() -> bytes:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=60) as sock:
            sock.sendall(b"EHLO x\r\n" + transaction * mails + b"QUIT\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    started = time.monotonic()
    transcript = await asyncio.to_thread(flood_session)
    elapsed = time.monotonic() - started
    assert transcript.count(b"550 5.6.0 not an order") == mails  # every one refused
    assert b"not recorded: too many refusals from 127.0.0.1" in transcript
    rows = JournalReader(config.journal_path()).list_jobs()
    assert REFUSALS_RECORDED_AT_ONCE <= len(rows) < mails
    assert len(rows) <= REFUSALS_RECORDED_AT_ONCE + REFUSALS_RECORDED_PER_SECOND * elapsed + 1
    handler = daemon._handler
    assert handler.unrecorded_refusals.total == mails - len(rows)


def test_out_of_files_accept_failures_are_one_json_summary(tmp_path, notebooks):
    """max_connections above what the open-file limit allows: accept() fails with EMFILE.
    asyncio pauses accepting; the log gets one JSON summary, not a traceback per try."""
    if not flood.raise_own_file_limit(512):
        pytest.skip("the hard open-file limit is below 512")
    # No ssh key pool: its background key writes would fail for want of files too and log
    # on their own; this test is about accept().
    config = _config(tmp_path, notebooks, allowed_networks=["127.0.0.0/8"],
                     accounts={"ssh_key_pool": 0})
    # All 120 from this test's uid: the per-uid cap must not close them before the files run out.
    config["listen"] = {"host": "127.0.0.1", "port": 0, "max_connections": 256,
                        "max_connections_per_uid": 256}
    with (
        flood.serve(tmp_path / "serve", config, open_files=64) as server,
        flood.idle_connections(server.port, 120, source="127.0.0.1") as connected,
    ):
        assert connected > 0
        time.sleep(2)  # asyncio retries accept() every second meanwhile
    lines = server.log_lines()
    events = [json.loads(line) for line in lines]  # every line is JSON
    assert sum(len(line) for line in lines) < 10_000, lines[:20]
    [warning] = [e for e in events if e["event"] == "open-file limit too low for "
                 "listen.max_connections"]
    assert (warning["limit"], warning["max_connections"]) == (64, 256)
    summaries = [e for e in events if e["event"].startswith("accept() failed")]
    assert 1 <= len(summaries) <= 12  # one per 10 s window of the burst
    assert {key for summary in summaries for key in summary["by"]} == {"EMFILE"}
