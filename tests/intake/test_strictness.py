"""Senders and parsing held strictly (issue 8 item 6), and non-order mail kept without its
body (issue 6): real SMTP sessions into a real daemon, then the journal and the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from wodmail import cli
from wodmail.dev.standins.mail_clients import converse
from wodmail.intake.parse import parse_order
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader
from wodmail.orders import OrderRules, Rejection

ALLOWED = "wod@example.org"


def crlf_session(mail_from: str, message: bytes) -> bytes:
    return (
        f"EHLO client.example.org\r\nMAIL FROM:{mail_from}\r\nRCPT TO:<w@backend>\r\n"
        "DATA\r\n"
    ).encode() + message + b"\r\n.\r\nQUIT\r\n"


async def session(port: int, mail_from: str, headers: str, body: str = "WKSHP-API101") -> bytes:
    message = (headers + "\r\n\r\n" + body).encode()
    return await asyncio.to_thread(converse, "127.0.0.1", port, crlf_session(mail_from, message))


def journal(config) -> list:
    return JournalReader(config.journal_path()).list_jobs(newest_first=False)


async def wait_rows(config, count: int) -> list:
    for _ in range(500):
        rows = journal(config)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} journal rows, got {journal(config)}")


@pytest.mark.parametrize(
    ("check", "mail_from", "from_header", "outcome"),
    [
        ("both", f"<{ALLOWED}>", ALLOWED, "250"),
        ("both", f"<{ALLOWED}>", None, "250"),
        ("both", "<>", ALLOWED, "sender not allowed: <> (envelope: the null sender)"),
        ("both", f"<{ALLOWED}>", "mallory@example.net",
         "sender not allowed: mallory@example.net (From header)"),
        ("both", f"<{ALLOWED}>", f"{ALLOWED} <evil@example.net>",
         "sender not allowed: evil@example.net (From header)"),
        ("envelope", f"<{ALLOWED}>", "mallory@example.net", "250"),
        ("envelope", "<mallory@example.net>", ALLOWED,
         "sender not allowed: mallory@example.net (envelope)"),
        ("header", "<>", ALLOWED, "250"),
        ("header", f"<{ALLOWED}>", None,
         "sender not allowed: no From header (allowed_senders_check is header)"),
        ("header", "<mallory@example.net>", f"{ALLOWED} <evil@example.net>",
         "sender not allowed: evil@example.net (From header)"),
    ],
)
async def test_allowed_senders_check(make_config, start_daemon, check, mail_from, from_header,
                                     outcome):
    config = make_config(allowed_senders=[ALLOWED], allowed_senders_check=check)
    daemon = await start_daemon(config)
    headers = "Subject: CREATE 3 0" + (f"\r\nFrom: {from_header}" if from_header else "")
    transcript = await session(daemon.port, mail_from, headers)
    [row] = await wait_rows(config, 1)
    if outcome == "250":
        assert b"250 2.0.0 OK job 1" in transcript
        assert row.state is not JobState.REJECTED
    else:
        assert f"550 5.6.0 {outcome} (job 1)".encode() in transcript
        assert (row.state, row.reason) == (JobState.REJECTED, outcome)


async def test_display_name_that_looks_like_an_address_is_not_the_sender(make_config,
                                                                         start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    await session(daemon.port, "<a@example.org>",
                  f"Subject: CREATE 3 0\r\nFrom: {ALLOWED} <evil@example.net>")
    [row] = await wait_rows(config, 1)
    assert row.sender == "evil@example.net"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Subject: CREATE 3 0\r\nSubject: CREATE 4 0",
         "2 Subject headers: an order has exactly one"),
        ("Subject: CREATE 3 0\r\nFrom: a@example.org\r\nFrom: b@example.org",
         "2 From headers: an order has exactly one"),
        ("Subject: CREATE 3 0\r\nFrom: a@example.org, b@example.org",
         "From header is not one address: 'a@example.org, b@example.org'"),
        ("Subject: CREATE\u00a03 0",
         "subject contains U+00A0 (NO-BREAK SPACE): words must be separated by plain spaces"),
        ("Subject: CREATE 3\u30000",
         "subject contains U+3000 (IDEOGRAPHIC SPACE): words must be separated by plain spaces"),
        ("Subject: =?utf-8?q?CREATE=C2=A03_0?=",
         "subject contains U+00A0 (NO-BREAK SPACE): words must be separated by plain spaces"),
        ("Subject: CREATE 3 0 \x1b[2J",
         "subject contains U+001B (control character): words must be separated by plain spaces"),
    ],
)
async def test_ambiguous_headers_are_refused_with_a_reason(make_config, start_daemon, headers,
                                                           reason):
    config = make_config()
    daemon = await start_daemon(config)
    transcript = await session(daemon.port, "<a@example.org>", headers)
    assert f"550 5.6.0 {reason}".encode() in transcript
    [row] = await wait_rows(config, 1)
    assert (row.state, row.reason) == (JobState.REJECTED, reason)


SMUGGLED = (
    b"Subject: CREATE 1 0\r\n\r\nWKSHP-API101\n.\nMAIL FROM:<a@example.org>\n"
    b"RCPT TO:<w@backend>\nDATA\nSubject: CREATE 2 0\n\nWKSHP-API101\n"
)


async def test_crlf_session_is_held_to_crlf_no_smuggling(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    transcript = await asyncio.to_thread(
        converse, "127.0.0.1", daemon.port, crlf_session("<a@example.org>", SMUGGLED))
    assert b"SMTP smuggling" in transcript
    await asyncio.sleep(0.3)  # a second row, if any, would be there by now
    [row] = journal(config)
    assert row.state is JobState.REJECTED
    assert "bare-LF end of data" in (row.reason or "")


async def test_bare_lf_session_keeps_ending_data_at_lf_dot_lf(make_config, start_daemon):
    # The portal's and the admin tool's sessions never use CRLF: the same bytes there are
    # two pipelined transactions, both orders.
    config = make_config()
    daemon = await start_daemon(config)
    session_bytes = (b"MAIL FROM:<a@example.org>\nRCPT TO:<w@backend>\nDATA\n"
                     + SMUGGLED.replace(b"\r\n", b"\n") + b".\nQUIT\n")
    transcript = await asyncio.to_thread(converse, "127.0.0.1", daemon.port, session_bytes)
    assert b"OK job 1" in transcript and b"OK job 2" in transcript
    rows = await wait_rows(config, 2)
    assert [row.student for row in rows] == [1, 2]


def deep_multipart(depth: int) -> bytes:
    text = "Subject: CREATE 1 0\nMIME-Version: 1.0\n"
    for level in range(depth):
        text += f"Content-Type: multipart/mixed; boundary=b{level}\n\n--b{level}\n"
    text += "Content-Type: text/plain\n\nWKSHP-API101\n"
    for level in reversed(range(depth)):
        text += f"--b{level}--\n"
    return text.encode()


def test_deeply_nested_multipart_gets_a_specific_reason():
    parsed = parse_order(deep_multipart(1000), OrderRules())
    assert isinstance(parsed, Rejection)
    assert parsed.reason == (
        "MIME structure too complex: 1000 multipart parts (an order has at most 16)")
    assert parse_order(deep_multipart(3), OrderRules()).workshop == "WKSHP-API101"


CREDENTIALS = (
    b"HELO api.example.org\nMAIL FROM: wod@example.org\nRCPT TO: jane@example.com\nDATA\n"
    b"Subject: Workshops-on-Demand credentials\nHello Jane,\nUser Name: student4\n"
    b"Password: Pw-7hX3kq9TzR\n.\nQUIT\n"
)


def _config_file(tmp_path: Path, config) -> Path:
    path = tmp_path / "cli.yml"
    path.write_text(json.dumps({"state_dir": str(config.state_dir)}))
    return path


async def test_credentials_mail_is_recorded_without_its_body(make_config, start_daemon,
                                                             tmp_path, capsys):
    config = make_config()
    daemon = await start_daemon(config)
    transcript = await asyncio.to_thread(converse, "127.0.0.1", daemon.port, CREDENTIALS)
    assert b"550 5.6.0 not an order" in transcript
    [row] = await wait_rows(config, 1)
    raw = JournalReader(config.journal_path()).raw(row.id) or b""
    assert b"Pw-7hX3kq9TzR" not in raw and b"student4" not in raw
    assert raw == (b"Subject: Workshops-on-Demand credentials\nTo: jane@example.com\n"
                   b"X-Wodmail-Body: not stored, not an order (97 bytes received)\n")
    path = str(_config_file(tmp_path, config))
    for extra in ([], ["--json"]):
        await asyncio.to_thread(cli.main, ["show", "1", "--raw", *extra, "--config", path])
        out = capsys.readouterr().out
        assert "Workshops-on-Demand credentials" in out and "Pw-7hX3kq9TzR" not in out


async def test_order_like_refusal_keeps_its_mail(make_config, start_daemon):
    config = make_config()
    daemon = await start_daemon(config)
    await session(daemon.port, "<a@example.org>", "Subject: CREATE 42 0")
    [row] = await wait_rows(config, 1)
    assert b"WKSHP-API101" in (JournalReader(config.journal_path()).raw(row.id) or b"")


async def test_escape_bytes_are_shown_escaped(make_config, start_daemon, tmp_path, capsys):
    config = make_config(allowed_senders=[ALLOWED])
    daemon = await start_daemon(config)
    await session(daemon.port, '<"\x1b[2J"@example.net>', "Subject: CREATE 3 0 \x1b]0;pwned\x07")
    await wait_rows(config, 1)
    path = str(_config_file(tmp_path, config))
    await asyncio.to_thread(cli.main, ["show", "1", "--raw", "--config", path])
    await asyncio.to_thread(cli.main, ["jobs", "--config", path])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in out  # the subject, in show
    assert '"\\x1b[2J"@example.net' in out  # the envelope sender, in the jobs table
