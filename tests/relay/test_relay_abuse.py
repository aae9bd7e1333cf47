"""The relay is no open relay: what a student could try from a terminal on the backend.

wodmail runs for real on loopback with the smarthost stand-in (a real aiosmtpd server that
records what it receives); clients are real SMTP clients (smtplib, or the portal's bare-LF
burst). Forged senders, too many recipients, Bcc headers, a flood, and escape sequences in
what `wodmail relay` prints.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import smtplib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest
import yaml

from support.relay import PORTAL_SENDER, eventually, outbox, portal_mail, send_raw
from wodmail import cli, logs
from wodmail.config import Config, load_config
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader
from wodmail.relay.message import prepare_message
from wodmail.relay.ratelimit import SlidingWindow

ROOT = os.geteuid() == 0


def send(port: int, mail_from: str, recipients: list[str], message: str) -> str:
    """Sends with smtplib (CRLF, reads every reply); returns the final reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("student-terminal")
        client.mail(mail_from)
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            assert code == 250, (recipient, code, text)
        code, text = client.data(message.replace("\n", "\r\n").encode())
    return f"{code} {text.decode()}"


def refusals(config: Config) -> list[str]:
    reader = JournalReader(config.journal_path())
    return [job.reason or "" for job in reader.list_jobs() if job.state is JobState.REJECTED]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure_logging(stream=stream)  # the default verbosity
    yield stream
    logs.configure_logging()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- forged senders ---------------------------------------------------------------------------

FORGED = [
    # (MAIL FROM, header lines, what the refusal says)
    ("ceo@bank.example", "From: CEO <ceo@bank.example>",
     "sender not allowed to relay: ceo@bank.example (envelope; not in relay.allowed_senders)"),
    (PORTAL_SENDER, "From: CEO <ceo@bank.example>",
     "sender not allowed to relay: ceo@bank.example (From header; not in relay.allowed_senders)"),
    (PORTAL_SENDER, f'From: "{PORTAL_SENDER}" <ceo@bank.example>',
     "sender not allowed to relay: ceo@bank.example (From header"),
    (PORTAL_SENDER, "From: ceo@bank.example", "ceo@bank.example (From header"),
    (PORTAL_SENDER, f"From: <{PORTAL_SENDER}>\nFrom: <ceo@bank.example>",
     "relay refused: 2 From headers: a mail has at most one"),
    (PORTAL_SENDER, f"From: <{PORTAL_SENDER}>, <ceo@bank.example>",
     "relay refused: From header holds more than one address"),
    (PORTAL_SENDER, f"From: <{PORTAL_SENDER}>\nSender: ceo@bank.example",
     "sender not allowed to relay: ceo@bank.example (Sender header"),
    (PORTAL_SENDER, f"From: <{PORTAL_SENDER}>\nResent-From: CEO\n <ceo@bank.example>",
     "sender not allowed to relay: ceo@bank.example (Resent-From header"),
    (PORTAL_SENDER, "Subject: hi\rFrom: <ceo@bank.example>",
     "relay refused: a bare CR or a NUL in the header block"),
]


async def test_a_forged_sender_is_refused_with_its_reason_and_recorded(
    relay_config, smarthost, start_daemon
):
    smarthost.start()
    config = relay_config()
    daemon = await start_daemon(config)
    for mail_from, headers, reason in FORGED:
        message = f"{headers}\nTo: jane@example.com\nSubject: Urgent wire\n\nPay now.\n"
        reply = await asyncio.to_thread(send, daemon.port, mail_from, ["jane@example.com"],
                                        message)
        assert reply.startswith("550 5.6.0 ") and reason in reply, (headers, reply)

    # The allowed sender, with or without a display name, is relayed.
    allowed = f"From: WoD <{PORTAL_SENDER.upper()}>\nSubject: Welcome\n\nHello\n"
    reply = await asyncio.to_thread(send, daemon.port, PORTAL_SENDER, ["jane@example.com"],
                                    allowed)
    assert reply.startswith("250 2.0.0 OK queued for relay")
    await eventually(lambda: smarthost.mails(), "the allowed mail at the smarthost")
    assert [message_from_bytes(m.content)["Subject"] for m in smarthost.mails()] == ["Welcome"]
    assert len(outbox(config)) == 1
    recorded = refusals(config)
    assert len(recorded) == len(FORGED)
    for _, _, reason in FORGED:
        assert any(reason in line for line in recorded), reason


async def test_the_relay_refuses_everyone_when_no_sender_is_known(relay_config, smarthost,
                                                                  start_daemon):
    smarthost.start()
    config = relay_config(allowed_senders=None)  # and no allowed_senders, no WODSENDER
    daemon = await start_daemon(config)
    replies = await asyncio.to_thread(
        send_raw, daemon.port, portal_mail("jane@example.com", "Welcome", "\nHello")
    )
    assert b"550 5.6.0 sender not allowed to relay: relay.allowed_senders is empty" in replies
    assert outbox(config) == [] and smarthost.mails() == []


async def test_the_default_senders_are_wodsender_and_the_order_senders(
    relay_config, smarthost, start_daemon
):
    smarthost.start()
    config = relay_config(
        {"vars": {"WODSENDER": "wod@example.org"}, "allowed_senders": ["admin@example.org"]},
        allowed_senders=None,
    )
    daemon = await start_daemon(config)
    for sender in ("wod@example.org", "admin@example.org"):
        mail = portal_mail("jane@example.com", f"From {sender}", "\nHello", sender=sender)
        assert b"queued for relay" in await asyncio.to_thread(send_raw, daemon.port, mail)
    mail = portal_mail("jane@example.com", "Forged", "\nHello", sender=PORTAL_SENDER)
    assert b"550 5.6.0 sender not allowed to relay" in await asyncio.to_thread(
        send_raw, daemon.port, mail)
    await eventually(lambda: len(smarthost.mails()) == 2, "both allowed mails")


async def test_a_reload_changes_the_default_senders(tmp_path, relay_config, smarthost,
                                                    start_daemon):
    smarthost.start()
    base = relay_config(allowed_senders=None)
    data = {
        "listen": {"host": "127.0.0.1", "port": 0}, "status": {"listen": None},
        "state_dir": str(base.state_dir), "relay": base.relay.model_dump(mode="json"),
        "vars": {"WODSENDER": "old@example.org"},
    }
    file = tmp_path / "wodmail.yml"
    file.write_text(yaml.safe_dump(data))
    daemon = await start_daemon(load_config(file))
    file.write_text(yaml.safe_dump({**data, "vars": {"WODSENDER": "new@example.org"}}))
    assert await daemon.reload()
    old = portal_mail("jane@example.com", "Old", "\nHello", sender="old@example.org")
    new = portal_mail("jane@example.com", "New", "\nHello", sender="new@example.org")
    assert b"550 5.6.0 sender not allowed to relay" in await asyncio.to_thread(
        send_raw, daemon.port, old)
    assert b"queued for relay" in await asyncio.to_thread(send_raw, daemon.port, new)


# --- recipients and Bcc -----------------------------------------------------------------------


async def test_more_recipients_than_max_recipients_is_refused_whole_at_data(
    relay_config, smarthost, start_daemon
):
    smarthost.start()
    config = relay_config()  # relay.max_recipients: the default, 10
    daemon = await start_daemon(config)
    message = f"From: <{PORTAL_SENDER}>\nSubject: Newsletter\n\nHello all\n"
    eleven = [f"p{n}@example.com" for n in range(11)]
    reply = await asyncio.to_thread(send, daemon.port, PORTAL_SENDER, eleven, message)
    reason = "relay refused: 11 recipients, relay.max_recipients is 10"
    assert reply == f"550 5.6.0 {reason} (job 1)"
    assert outbox(config) == [] and refusals(config) == [reason]

    reply = await asyncio.to_thread(send, daemon.port, PORTAL_SENDER, eleven[:10], message)
    assert reply.startswith("250 ")
    [received] = await eventually(lambda: smarthost.mails(), "the mail to ten")
    assert received.rcpt_tos == eleven[:10]


async def test_bcc_reaches_its_recipient_but_no_one_sees_it(relay_config, smarthost,
                                                           start_daemon):
    smarthost.start()
    config = relay_config()
    daemon = await start_daemon(config)
    message = textwrap.dedent(f"""\
        From: <{PORTAL_SENDER}>
        To: jane@example.com
        BCC: hidden@example.net,
         also-hidden@example.net
        Subject: Your credentials
        resent-bcc: third@example.net

        Hello Jane
        Bcc: a line of the body stays as written
        """)
    recipients = ["jane@example.com", "hidden@example.net", "also-hidden@example.net"]
    await asyncio.to_thread(send, daemon.port, PORTAL_SENDER, recipients, message)
    [received] = await eventually(lambda: smarthost.mails(), "the mail at the smarthost")
    assert received.rcpt_tos == recipients  # the envelope still reaches them
    head, body = received.content.split(b"\r\n\r\n", 1)
    assert b"hidden" not in head and b"third" not in head and b"bcc" not in head.lower()
    assert b"To: jane@example.com\r\nSubject: Your credentials\r\n" in head
    assert body == b"Hello Jane\r\nBcc: a line of the body stays as written\r\n"


# --- the rate limit ---------------------------------------------------------------------------


async def test_over_max_per_minute_a_client_gets_451_then_gets_through_later(
    relay_config, smarthost, start_daemon, log_stream
):
    from wodmail.metrics import SMTP_REFUSALS

    smarthost.start()
    config = relay_config(max_per_minute=3)
    daemon = await start_daemon(config)
    clock = Clock()
    daemon.relay.policy.rate.clock = clock  # time moves only when the test says so
    rate_refusals = SMTP_REFUSALS.labels("rate")._value.get()
    message = f"From: <{PORTAL_SENDER}>\nSubject: Hi\n\nHello\n"

    def one(n: int) -> str:
        return send(daemon.port, PORTAL_SENDER, [f"p{n}@example.com"], message)

    replies = [await asyncio.to_thread(one, n) for n in range(3)]
    assert all(reply.startswith("250 ") for reply in replies), replies
    clock.now += 30
    deferred = [await asyncio.to_thread(one, n) for n in (3, 4)]
    # The key is this test process's uid: smtplib's socket is still open when wodmail looks.
    assert deferred == [
        f"451 4.7.0 too many mails relayed for 127.0.0.1 uid {os.getuid()}: "
        "relay.max_per_minute is 3, try again in 30 s"
    ] * 2
    assert SMTP_REFUSALS.labels("rate")._value.get() == rate_refusals + 2
    assert refusals(config) == []  # a temporary refusal is no record

    clock.now += 30  # the first three leave the window
    assert (await asyncio.to_thread(one, 5)).startswith("250 ")
    await eventually(lambda: len(smarthost.mails()) == 4, "four mails delivered")
    assert sorted(r for m in smarthost.mails() for r in m.rcpt_tos) == [
        "p0@example.com", "p1@example.com", "p2@example.com", "p5@example.com"]

    # One log line for the burst, with its count, not one per mail.
    assert "mails to relay deferred" not in log_stream.getvalue()
    daemon._handler.relay_deferred.flush()
    [line] = [json.loads(line) for line in log_stream.getvalue().splitlines()
              if "mails to relay deferred" in line]
    assert line["count"] == 2 and line["by"] == {f"127.0.0.1 uid {os.getuid()}": 2}


def _python_for_others() -> str | None:
    """A Python another uid can run: every folder on its real path, and itself, o+x."""
    for candidate in ("/usr/bin/python3", sys.executable):
        path = Path(candidate).resolve()
        if path.exists() and all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents)):
            return str(path)
    return None


def _send_as(uid: int, port: int, sender: str) -> str:
    """One mail from a process running as `uid` (root only: subprocess `user=`)."""
    code = textwrap.dedent(f"""\
        import smtplib
        with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as client:
            client.mail({sender!r})
            client.rcpt("joe@example.com")
            print(*client.data(b"Subject: from another uid\\r\\n\\r\\nHi\\r\\n"))
        """)
    python = _python_for_others()
    if python is None:
        pytest.skip("no Python that another uid may run (its folders are not o+x)")
    done = subprocess.run([python, "-I", "-c", code], user=uid, cwd="/",
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


@pytest.mark.skipif(not ROOT, reason="root only: the second client runs as another uid")
async def test_each_local_uid_has_its_own_budget(relay_config, smarthost, start_daemon):
    smarthost.start()
    # nobody is let in (listen.local_users) to show that each local uid has its own budget.
    local_users = {"local_users": ["root", os.getuid(), 65534]}
    config = relay_config({"listen": {"host": "127.0.0.1", "port": 0, **local_users}},
                          max_per_minute=1)
    daemon = await start_daemon(config)
    daemon.relay.policy.rate.clock = Clock()
    message = f"From: <{PORTAL_SENDER}>\nSubject: Hi\n\nHello\n"
    assert (await asyncio.to_thread(
        send, daemon.port, PORTAL_SENDER, ["a@example.com"], message)).startswith("250 ")
    assert "for 127.0.0.1 uid 0:" in await asyncio.to_thread(
        send, daemon.port, PORTAL_SENDER, ["b@example.com"], message)
    # nobody's (65534) budget is untouched by root's flood, then spent in turn
    assert "250 b'2.0.0 OK queued for relay" in await asyncio.to_thread(
        _send_as, 65534, daemon.port, PORTAL_SENDER)
    assert "451 b'4.7.0 too many mails relayed for 127.0.0.1 uid 65534:" in (
        await asyncio.to_thread(_send_as, 65534, daemon.port, PORTAL_SENDER))


# --- wodmail relay prints what came in, escaped -----------------------------------------------


async def test_wodmail_relay_shows_escape_sequences_escaped(
    relay_config, smarthost, start_daemon, capsys, tmp_path
):
    smarthost.start()
    smarthost.refuse("451 4.7.1 \x1b[31mred\x1b[0m greylisted", times=99)
    config = relay_config(retry_base_seconds=3600, retry_max_seconds=3600)
    daemon = await start_daemon(config)
    subject = "\x1b]0;pwned\x07 hi \x1b[2J"
    mail = portal_mail("jane@example.com", subject, "\nHello")
    assert b"queued for relay" in await asyncio.to_thread(send_raw, daemon.port, mail)
    await eventually(lambda: [m for m in outbox(config) if m["last_error"]], "a failed try")
    file = tmp_path / "wodmail.yml"
    file.write_text(json.dumps({"state_dir": str(config.state_dir)}))

    assert await asyncio.to_thread(cli.main, ["relay", "--config", str(file)]) == 0
    table = capsys.readouterr().out
    assert "\x1b" not in table and "\x07" not in table
    assert "\\x1b]0;pwned\\x07 hi \\x1b[2J" in table
    assert "451 4.7.1 \\x1b[31mred\\x1b[0m greylisted" in table

    assert await asyncio.to_thread(cli.main, ["relay", "--json", "--config", str(file)]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\x07" not in text
    [listed] = json.loads(text)
    assert listed["subject"] == subject  # escaped on the wire, the same text once parsed
    assert listed["last_error"] == "451 4.7.1 \x1b[31mred\x1b[0m greylisted"


# --- the pieces -------------------------------------------------------------------------------


def test_the_sliding_window_counts_any_minute_not_calendar_minutes():
    clock = Clock()
    window = SlidingWindow(2, 60.0, clock)
    assert window.take("a") and window.take("b")
    clock.now += 59
    assert window.take("a") and not window.take("a")  # two in the last 60 s
    assert window.retry_in("a") == pytest.approx(1.0)
    clock.now += 1  # the first leaves the window, the second stays
    assert window.take("a") and not window.take("a")
    assert window.take("b")  # each client on its own
    with pytest.raises(ValueError, match="limit >= 1"):
        SlidingWindow(0)


def test_prepare_removes_every_blind_copy_header_and_nothing_else():
    raw = (b"To: a@x\nbcc: b@x,\n\tc@x\nSubject: s\nResent-Bcc: d@x\nX-Bcc-Note: kept\n\n"
           b"body\nBcc: body line\n")
    prepared = prepare_message(raw, mail_from="s@x", peer="127.0.0.1", helo="h",
                               hostname="be.example.org", received_at=0.0)
    head, body = prepared.message.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[2:5] == [b"To: a@x", b"Subject: s", b"X-Bcc-Note: kept"]
    assert b"b@x" not in head and b"c@x" not in head and b"d@x" not in head
    assert body == b"body\r\nBcc: body line\r\n"


def test_relay_settings_are_validated_with_their_key(make_config):
    from wodmail.errors import ConfigurationError

    with pytest.raises(ConfigurationError,
                       match=r"relay.allowed_senders: Value error, not an address \(user@domain\)"
                             r": 'portal'"):
        make_config(relay={"host": "smtp.example.org", "allowed_senders": ["portal"]})
    with pytest.raises(ConfigurationError, match="relay.max_recipients: Input should be greater"):
        make_config(relay={"host": "smtp.example.org", "max_recipients": 0})
    config = make_config(relay={"host": "smtp.example.org", "allowed_senders": [" WoD@X.org "]})
    assert config.relay.allowed_senders == ["wod@x.org"]
    assert (config.relay.max_recipients, config.relay.max_per_minute) == (10, 60)
    assert config.relay_senders({"WODSENDER": "other@x.org"}) == ["wod@x.org"]
    default = make_config(relay={"host": "smtp.example.org"}, allowed_senders=["a@x.org"])
    assert default.relay_senders({"WODSENDER": "Portal@X.org"}) == ["a@x.org", "portal@x.org"]
    assert make_config().relay_senders({"WODSENDER": "{{ unrendered }}"}) == []


def test_check_config_names_the_relays_senders_and_limits(make_config):
    from wodmail.configcheck import run_checks

    def line(config: Config) -> str:
        [found] = [c for c in run_checks(config) if c.what == "relay.allowed_senders in force"]
        return f"{found.status} {found.detail}"

    config = make_config(relay={"host": "smtp.example.org", "max_per_minute": 20},
                         vars={"WODSENDER": "wod@example.org"})
    assert line(config) == (
        "ok wod@example.org (from allowed_senders and WODSENDER); at most 10 recipients a mail"
        " and 20 mails a minute per client")
    config = make_config(relay={"host": "smtp.example.org", "allowed_senders": []})
    assert line(config).startswith("warn [] (every mail to relay is refused) (from"
                                   " relay.allowed_senders)")
