"""Intake end to end: real clients over real sockets → the journal on disk."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import sqlite3
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from wodmail.config import Config
from wodmail.dev.standins.mail_clients import (
    send_netcat_style,
    send_portal_style,
    send_portal_style_async,
    send_smtplib,
)
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import RAW_KEPT_BYTES, JournalReader


async def wait_jobs(config: Config, count: int, *, finished: bool = True) -> list[Job]:
    """Waits (up to 20 s) until the journal holds `count` jobs, all finished if asked."""
    reader = JournalReader(config.journal_path())
    deadline = time.monotonic() + 20
    while True:
        jobs = reader.list_jobs(newest_first=False)
        if len(jobs) >= count and (not finished or all(j.state.finished for j in jobs)):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"journal holds {len(jobs)} jobs, expected {count}: {jobs}")
        await asyncio.sleep(0.02)


async def in_thread(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kw)


async def test_portal_burst_order_is_recorded_and_run(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    await in_thread(
        send_portal_style,
        "127.0.0.1",
        daemon.port,
        "CREATE 4 825 jane@example.com",
        "WKSHP-API101",
    )
    [job] = await wait_jobs(config, 1)
    assert job.state is JobState.DONE
    assert (job.verb, job.student, job.customer, job.email) == (
        "CREATE",
        4,
        825,
        "jane@example.com",
    )
    assert job.workshop == "WKSHP-API101"
    assert job.envelope_from == "sender@example.org"
    assert job.result["summary"] == "no-op"


async def test_200_portal_orders_in_a_row_all_recorded(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)

    def send_all() -> None:
        for i in range(200):
            send_portal_style(
                "127.0.0.1", daemon.port, f"CREATE {i % 20 + 1} {1000 + i}", "WKSHP-API101"
            )

    await in_thread(send_all)
    jobs = await wait_jobs(config, 200)
    assert len(jobs) == 200
    assert {job.customer for job in jobs} == set(range(1000, 1200))
    assert all(job.state is JobState.DONE for job in jobs)


async def test_concurrent_portal_clients_all_recorded(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    await asyncio.gather(
        *(
            send_portal_style_async(
                "127.0.0.1", daemon.port, f"CLEANUP {i % 20 + 1} {i + 1}", "WKSHP-K8S101"
            )
            for i in range(60)
        )
    )
    jobs = await wait_jobs(config, 60)
    assert sorted(job.customer for job in jobs) == list(range(1, 61))


async def test_netcat_admin_tool_without_helo(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    transcript = await in_thread(
        send_netcat_style, "127.0.0.1", daemon.port, "CREATE 12 0", "WKSHP-API101"
    )
    assert b"250 2.0.0 OK job 1" in transcript
    [job] = await wait_jobs(config, 1)
    assert (job.verb, job.student, job.customer) == ("CREATE", 12, 0)


async def test_smtplib_mime_order_gets_job_id(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    code, reply = await in_thread(
        send_smtplib,
        "127.0.0.1",
        daemon.port,
        "RESET 1,6 825",
        "WKSHP-OneView\n\n-- \nBye",
        message_id="<abc@portal>",
    )
    assert (code, reply) == (250, b"2.0.0 OK job 1")
    [job] = await wait_jobs(config, 1)
    assert job.student_field == [1, 6]
    assert job.message_id == "abc@portal"


@pytest.mark.parametrize(
    ("subject", "body", "reason"),
    [
        ("CREATE 42 825", "WKSHP-API101", "student 42 outside 1..20"),
        ("CREATE 4 825", "WKSHP-Nope", "unknown workshop WKSHP-Nope"),
    ],
)
async def test_refused_order_gets_550_and_is_recorded(
    make_config, start_daemon, subject, body, reason
):
    config = make_config()
    daemon = await start_daemon(config)
    code, reply = await in_thread(send_smtplib, "127.0.0.1", daemon.port, subject, body)
    assert code == 550
    assert reason in reply.decode()
    [job] = await wait_jobs(config, 1)
    assert job.state is JobState.REJECTED
    assert job.reason == reason
    assert job.peer == "127.0.0.1"
    assert JournalReader(config.journal_path()).raw(job.id).find(body.encode()) >= 0


async def test_sender_allow_list(make_config, start_daemon):
    config = make_config(allowed_senders=["portal@example.org"])
    daemon = await start_daemon(config)
    code, reply = await in_thread(
        send_smtplib,
        "127.0.0.1",
        daemon.port,
        "CREATE 4 825",
        "WKSHP-API101",
        sender="mallory@example.net",
    )
    assert code == 550
    assert b"sender not allowed: mallory@example.net" in reply
    code, _ = await in_thread(
        send_smtplib,
        "127.0.0.1",
        daemon.port,
        "CREATE 5 825",
        "WKSHP-API101",
        sender="Portal@Example.org",
    )
    assert code == 250
    jobs = await wait_jobs(config, 2)
    assert [j.state for j in jobs] == [JobState.REJECTED, JobState.DONE]


async def test_client_network_allow_list_is_checked_at_connect(make_config, start_daemon):
    config = make_config(allowed_networks=["192.0.2.0/24"])
    daemon = await start_daemon(config)

    def greeting() -> bytes:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            return sock.recv(4096)

    reply = await in_thread(greeting)
    assert reply == b"554 5.7.1 client 127.0.0.1 is not in allowed_networks\r\n"
    # No session, so no journal row: a flood of such connections costs nothing on disk.
    assert JournalReader(config.journal_path()).list_jobs() == []


async def test_oversize_mail_gets_552_and_is_recorded(make_config, start_daemon):
    config = make_config(max_message_bytes=2048)
    daemon = await start_daemon(config)
    code, reply = await in_thread(
        send_smtplib, "127.0.0.1", daemon.port, "CREATE 4 0", "WKSHP-API101\n" + "x" * 5000
    )
    assert code == 552
    assert b"2048" in reply
    [job] = await wait_jobs(config, 1)
    assert job.state is JobState.REJECTED
    assert "exceeds the 2048-byte limit" in (job.reason or "")


async def test_same_message_id_twice_runs_once(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    first = await in_thread(
        send_smtplib,
        "127.0.0.1",
        daemon.port,
        "CREATE 4 825",
        "WKSHP-API101",
        message_id="<once@portal>",
    )
    second = await in_thread(
        send_smtplib,
        "127.0.0.1",
        daemon.port,
        "CREATE 4 825",
        "WKSHP-API101",
        message_id="<once@portal>",
    )
    assert first == (250, b"2.0.0 OK job 1")
    assert second == (250, b"2.0.0 OK duplicate of job 1")
    [job] = await wait_jobs(config, 1)
    assert job.duplicates == 1


async def test_portal_repeat_within_window_is_one_order(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    for _ in range(2):
        await in_thread(send_portal_style, "127.0.0.1", daemon.port, "CREATE 4 825", "WKSHP-API101")
    await in_thread(send_portal_style, "127.0.0.1", daemon.port, "CLEANUP 4 825", "WKSHP-API101")
    await in_thread(send_portal_style, "127.0.0.1", daemon.port, "CREATE 4 825", "WKSHP-API101")
    jobs = await wait_jobs(config, 3)
    await asyncio.sleep(0.2)  # a fourth row, if any, would be there by now
    jobs = JournalReader(config.journal_path()).list_jobs(newest_first=False)
    assert [j.verb for j in jobs] == ["CREATE", "CLEANUP", "CREATE"]
    assert jobs[0].duplicates == 1


async def test_several_transactions_on_one_connection_and_rset(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)

    def converse() -> bytes:
        lines = (
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<w@x>\r\nDATA\r\nSubject: CREATE 1 0\r\n\r\n"
            b"WKSHP-API101\r\n.\r\nRSET\r\nNOOP\r\nMAIL FROM:<a@b>\r\nRCPT TO:<w@x>\r\nDATA\r\n"
            b"Subject: CREATE 2 0\r\n\r\nWKSHP-API101\r\n.\r\nQUIT\r\n"
        )
        with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
            sock.sendall(lines)
            out = b""
            while chunk := sock.recv(4096):
                out += chunk
        return out

    transcript = await in_thread(converse)
    assert b"OK job 1" in transcript and b"OK job 2" in transcript
    assert transcript.rstrip().endswith(b"221 Bye")
    jobs = await wait_jobs(config, 2)
    assert [job.student for job in jobs] == [1, 2]


async def test_unfinished_orders_run_after_restart(make_config, start_daemon):
    config = make_config()
    release = asyncio.Event()

    async def stuck_runner(job, ctx):
        await release.wait()
        return {"summary": "never"}

    daemon = await start_daemon(config, stuck_runner)
    await in_thread(send_smtplib, "127.0.0.1", daemon.port, "CREATE 4 825", "WKSHP-API101")
    [job] = await wait_jobs(config, 1, finished=False)
    await daemon.stop(grace=0)
    assert JournalReader(config.journal_path()).get(job.id).state is JobState.RUNNING
    await start_daemon(config)
    [job] = await wait_jobs(config, 1)
    assert job.state is JobState.DONE
    assert job.attempts == 2


async def test_wodsender_from_group_vars_is_the_default_sender(make_config, start_daemon, tmp_path):
    group_vars = tmp_path / "all.yml"
    group_vars.write_text("WODSENDER: wod-portal@example.org\n")
    config = make_config(group_vars=[str(group_vars)])
    daemon = await start_daemon(config)
    refused, _ = await in_thread(send_smtplib, "127.0.0.1", daemon.port, "CREATE 4 0",
                                 "WKSHP-API101", sender="someone@example.org")
    accepted, _ = await in_thread(send_smtplib, "127.0.0.1", daemon.port, "CREATE 5 0",
                                  "WKSHP-API101", sender="wod-portal@example.org")
    assert (refused, accepted) == (550, 250)



def test_workshop_lookups_are_kept_only_briefly(notebooks):
    from wodmail.config import Notebooks
    from wodmail.intake.handler import _WorkshopFolders

    folders = _WorkshopFolders(Notebooks(public=notebooks), keep_seconds=0.5)
    assert folders.exists("WKSHP-K8S101")
    (notebooks / "WKSHP-K8S101").rmdir()
    assert folders.exists("WKSHP-K8S101")  # still within the kept answer
    time.sleep(0.6)
    assert not folders.exists("WKSHP-K8S101")
    assert not folders.exists("WKSHP-Never")


async def test_distinct_orders_sharing_a_message_id_all_run(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    replies = []
    for subject in ("CREATE 1 0", "CLEANUP 1 0", "CREATE 2 0", "PURGE 3 3", "CREATE 2 0"):
        replies.append(await in_thread(send_smtplib, "127.0.0.1", daemon.port, subject,
                                       "WKSHP-API101", message_id="<shared@portal>"))
    assert replies == [
        (250, b"2.0.0 OK job 1"),
        (250, b"2.0.0 OK job 2"),
        (250, b"2.0.0 OK job 3"),
        (250, b"2.0.0 OK job 4"),
        # The same content again with the same Message-ID is the same mail, re-sent.
        (250, b"2.0.0 OK duplicate of job 3"),
    ]
    jobs = await wait_jobs(config, 4)
    assert [(j.verb, j.student) for j in jobs] == [
        ("CREATE", 1), ("CLEANUP", 1), ("CREATE", 2), ("PURGE", 3)]


def journal_bytes(config: Config) -> int:
    """The journal's size as SQLite counts it (pages in the file and in its WAL)."""
    with sqlite3.connect(config.journal_path()) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages * conn.execute("PRAGMA page_size").fetchone()[0])


async def test_300_large_order_mails_grow_the_journal_by_16_kib_each_at_most(
    make_config, start_daemon
):
    config = make_config()
    daemon = await start_daemon(config)
    before = journal_bytes(config)
    filler = "".join(f"padding line {n:05d} of a large order mail\n" for n in range(1500))
    sent = 0
    for n in range(300):
        body = f"WKSHP-API101\n{filler}"[:60_000]
        code, _ = await in_thread(send_smtplib, "127.0.0.1", daemon.port,
                                  f"CREATE {n % 20 + 1} {n}", body)
        assert code in (250, 550)
        sent += len(body)
    jobs = await wait_jobs(config, 300)
    growth = journal_bytes(config) - before
    print(f"300 mails, {sent / 1e6:.1f} MB of bodies: the journal grew by {growth / 1e6:.2f} MB"
          f" ({growth / 300 / 1024:.1f} KiB a mail)")
    reader = JournalReader(config.journal_path())
    assert all(reader.stored_mail(job.id).omitted > 40_000 for job in jobs)
    assert growth < 300 * (RAW_KEPT_BYTES + 4096)  # each mail's first 16 KiB and its row


async def test_an_order_is_read_from_the_whole_mail_not_from_what_is_kept(
    make_config, start_daemon
):
    config = make_config()
    daemon = await start_daemon(config)
    message = EmailMessage()
    message["From"] = "sender@example.org"
    message["Subject"] = "CREATE 4 825"
    for n in range(24):  # 24 KB of headers before the body that names the workshop
        message[f"X-Padding-{n}"] = "p" * 1000
    message.set_content("WKSHP-API101")
    await in_thread(send_raw_mail, daemon.port, message.as_bytes())
    [job] = await wait_jobs(config, 1)
    assert (job.state, job.workshop) == (JobState.DONE, "WKSHP-API101")
    stored = JournalReader(config.journal_path()).stored_mail(job.id)
    assert b"WKSHP-API101" not in stored.data and stored.omitted > 0


def send_raw_mail(port: int, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("sender@example.org", ["wodadmin@backend.example.org"], data)


async def crlf_order_but_its_end(
    port: int, customer: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An ordinary pipelining client, its message sent but for the final `.` line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # 220
    writer.write(b"EHLO client.example.org\r\n")
    while (await reader.readline())[3:4] == b"-":
        pass
    writer.write(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<wodadmin@backend.example.org>\r\n"
                 b"DATA\r\n")
    replies = [await reader.readline() for _ in range(3)]
    assert replies[2].startswith(b"354"), replies
    writer.write(f"Subject: CREATE {customer % 20 + 1} {customer}\r\n\r\nWKSHP-API101\r\n"
                 .encode())
    await writer.drain()
    return reader, writer


async def test_concurrent_orders_share_commits_and_each_250_follows_its_commit(
    make_config, start_daemon
):
    """64 clients end their mails at once: the journal commits them in fewer transactions
    than orders (group commit), and each client, the moment it reads its 250, finds its
    order in the journal file through a connection of its own."""
    config = make_config()
    release = asyncio.Event()

    async def held(job: Job, ctx: Any) -> dict[str, Any]:
        await release.wait()  # the orders write nothing more while the burst is measured
        return {}

    daemon = await start_daemon(config, held)
    assert daemon.journal is not None
    customers = range(5000, 5064)
    sessions = await asyncio.gather(*(crlf_order_but_its_end(daemon.port, c) for c in customers))
    commits_before = daemon.journal.commits

    async def acknowledged(reader: asyncio.StreamReader) -> tuple[bytes, Any]:
        reply = await reader.readline()
        job_id = int(reply.rsplit(b" ", 1)[1]) if reply.startswith(b"250") else None
        with sqlite3.connect(f"file:{config.journal_path()}?mode=ro", uri=True) as fresh:
            row = fresh.execute("SELECT customer FROM orders WHERE id = ?", (job_id,))
            return reply, row.fetchone()

    for _reader, writer in sessions:
        writer.write(b".\r\n")  # all at once
    seen = await asyncio.gather(*(acknowledged(reader) for reader, _writer in sessions))
    commits = daemon.journal.commits - commits_before
    release.set()
    for _reader, writer in sessions:
        writer.close()
    assert all(reply.startswith(b"250 2.0.0 OK job ") for reply, _row in seen), seen
    assert sorted(row[0] for _reply, row in seen if row) == list(customers)
    assert commits < len(customers), f"{commits} commits for {len(customers)} orders"


async def test_a_line_a_session_reads_tells_execution_the_intake_is_busy(
    make_config, start_daemon
):
    config = make_config()
    daemon = await start_daemon(config)
    assert daemon.dispatcher is not None
    intake_first = daemon.dispatcher.intake_first
    before = intake_first.last_input
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    await reader.readline()  # 220
    writer.write(b"NOOP\r\n")
    assert (await reader.readline()).startswith(b"250")
    writer.close()
    assert intake_first.last_input > before


async def test_a_portal_session_frees_its_place_before_its_order_is_committed(
    make_config, start_daemon
):
    """The portal hangs up on the greeting and sends one connection per order, all at once:
    its session must not hold its place under the per-client caps until the commit (replies
    are not held back in its HELO sessions), or a bulk action meets 421s it never reads."""
    import threading

    config = make_config()
    daemon = await start_daemon(config)
    assert daemon.journal is not None and daemon.gate is not None
    writer_free = threading.Event()
    blocked = asyncio.ensure_future(daemon.journal._write(lambda conn: writer_free.wait(60)))
    try:
        await send_portal_style_async("127.0.0.1", daemon.port, "CREATE 3 7003", "WKSHP-API101")
        deadline = time.monotonic() + 20
        while daemon.gate.open and time.monotonic() < deadline:  # noqa: ASYNC110 - a count
            await asyncio.sleep(0.01)
        assert daemon.gate.open == 0
        assert JournalReader(config.journal_path()).list_jobs() == []  # not committed yet
    finally:
        writer_free.set()
        await blocked
    [job] = await wait_jobs(config, 1)
    assert job.customer == 7003
