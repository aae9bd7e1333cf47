"""The relay: participants' mail to a smarthost, over real sockets.

wodmail runs for real on loopback; the smarthost is a real aiosmtpd server that records what
it receives and can refuse with 4xx, hang, or be down. Mail is sent as the portal sends it
(one burst, bare LF, only a Subject header) and as ordinary mail software does.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage

import pytest

from support.relay import PORTAL_SENDER, eventually, outbox, portal_mail, send_raw
from wodmail import cli, logs
from wodmail.dev.standins.mail_clients import send_portal_style
from wodmail.dev.standins.smarthost import HungSmarthost, Smarthost, make_certificate
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader
from wodmail.relay.message import prepare_message
from wodmail.relay.routing import OrderMailbox, default_order_recipients, relay_hostname

PASSWORD = "Pw-7hX3kq9TzR"
CREDENTIALS_BODY = (
    "\n\n\nYour Workshops-on-Demand credentials\n"
    "Jane, the clock has started!\n"
    "User Name: student4\n"
    f"Password: {PASSWORD}\n"
    "URL: https://backend.example.org:8000/hub/login\n"
)


def send_credentials(port: int, recipient: str = "jane@example.com") -> bytes:
    mail = portal_mail(recipient, "Workshops-on-Demand credentials", CREDENTIALS_BODY)
    return send_raw(port, mail)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure_logging(1, stream=stream)  # debug: the strictest verbosity
    yield stream
    logs.configure_logging()


async def test_credentials_mail_arrives_once_intact_and_its_password_goes_nowhere_else(
    relay_config, smarthost, start_daemon, log_stream
):
    smarthost.start()
    config = relay_config()
    daemon = await start_daemon(config)
    replies = await asyncio.to_thread(send_credentials, daemon.port)
    assert b"250 2.0.0 OK queued for relay as 1" in replies

    [mail] = await eventually(
        lambda: [m for m in outbox(config) if m["state"] == "sent"], "the mail to be sent"
    )
    [received] = smarthost.mails()
    assert received.mail_from == "sender@example.org"
    assert received.rcpt_tos == ["jane@example.com"]
    message = message_from_bytes(received.content)
    assert message["Subject"] == "Workshops-on-Demand credentials"
    assert message["From"] == "<sender@example.org>"  # the portal sends none
    assert message["Date"] and message["Message-ID"]
    assert "by " in message["Received"] and "(wodmail)" in message["Received"]
    # The body as the portal wrote it, every line, with CRLF endings on the wire.
    body = received.content.split(b"\r\n\r\n", 1)[1]
    assert body == (CREDENTIALS_BODY[1:] + "\n").replace("\n", "\r\n").encode()
    assert b"\n" not in received.content.replace(b"\r\n", b"")
    assert (mail["attempts"], mail["delivered"], mail["pending"]) == (1, ["jane@example.com"], [])
    assert "queued as SH1" in mail["outcome"]

    # Once delivered, the text is gone from the outbox file (overwritten, not just unlinked),
    # it never reached the journal, and no log line carries it.
    await daemon.stop(grace=5)
    assert PASSWORD.encode() not in config.outbox_path().read_bytes()
    assert not any(config.state_dir.glob("outbox.sqlite3-*"))
    assert JournalReader(config.journal_path()).list_jobs() == []
    assert PASSWORD not in log_stream.getvalue()
    assert "mail relayed" in log_stream.getvalue()
    assert stat.S_IMODE(os.stat(config.outbox_path()).st_mode) == 0o600
    assert len(smarthost.mails()) == 1


async def test_the_portals_hang_up_burst_is_relayed_too(relay_config, smarthost, start_daemon):
    """The portal writes everything and hangs up on the first byte of the greeting."""
    smarthost.start()
    config = relay_config({"vars": {"WODBEEXTFQDN": "be.example.org:8443:https"}})
    daemon = await start_daemon(config)
    burst = portal_mail("jane@example.com", "Welcome to Workshops-on-Demand!", "\nHello Jane")

    def hang_up() -> None:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
            sock.sendall(burst)
            sock.recv(1)

    await asyncio.to_thread(hang_up)
    await eventually(lambda: [m for m in outbox(config) if m["state"] == "sent"], "delivery")
    [received] = smarthost.mails()
    assert received.rcpt_tos == ["jane@example.com"]
    assert message_from_bytes(received.content)["Subject"] == "Welcome to Workshops-on-Demand!"
    # wodmail names itself as the old Postfix did (myhostname = WODBEEXTFQDN)
    assert received.helo == "be.example.org"
    assert b"\tby be.example.org (wodmail) with SMTP;" in received.content
    assert received.content.split(b"\r\n\r\n", 1)[1] == b"Hello Jane\r\n"


async def test_mime_mail_from_mail_software_is_passed_on_byte_for_byte(
    relay_config, smarthost, start_daemon
):
    import smtplib

    smarthost.start()
    config = relay_config()
    daemon = await start_daemon(config)
    original = EmailMessage()
    original["From"] = "WoD <sender@example.org>"
    original["To"] = "jane@example.com, joe@example.net"
    original["Subject"] = "Réinitialisation"
    original["Message-ID"] = "<abc.123@api.example.org>"
    original["Date"] = "Sun, 29 Nov 2026 18:00:00 +0000"
    original.set_content("Bonjour,\n.leading dot\n\nÀ bientôt\n")
    original.add_alternative("<p>Bonjour</p>", subtype="html")
    wire = original.as_bytes(policy=original.policy.clone(linesep="\r\n"))

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
            client.sendmail("sender@example.org", ["jane@example.com", "joe@example.net"], wire)

    await asyncio.to_thread(send)
    await eventually(lambda: smarthost.mails(), "the mail at the smarthost")
    [received] = smarthost.mails()
    assert received.rcpt_tos == ["jane@example.com", "joe@example.net"]
    received_line, rest = received.content.split(b"\r\n", 1)
    assert received_line.startswith(b"Received: from ")
    rest = rest.split(b"\r\n", 1)[1]  # the Received line's folded second half
    assert rest == wire  # nothing added (it has From, Date, Message-ID), nothing changed
    [mail] = outbox(config)
    assert mail["message_id"] == "<abc.123@api.example.org>"
    assert mail["subject"] == "=?utf-8?q?R=C3=A9initialisation?="


async def test_smarthost_down_then_up_delivers_after_a_retry(relay_config, smarthost,
                                                             start_daemon):
    config = relay_config()  # the smarthost is not started: connections are refused
    daemon = await start_daemon(config)
    await asyncio.to_thread(send_credentials, daemon.port)
    [waiting] = await eventually(
        lambda: [m for m in outbox(config) if m["attempts"] >= 2], "two failed attempts"
    )
    assert waiting["state"] == "queued" and "Connection refused" in waiting["last_error"]
    smarthost.start()
    [mail] = await eventually(
        lambda: [m for m in outbox(config) if m["state"] == "sent"], "delivery"
    )
    assert mail["attempts"] >= 3
    assert len(smarthost.mails()) == 1


async def test_4xx_for_a_while_then_delivered_once(relay_config, smarthost, start_daemon):
    smarthost.start()
    smarthost.refuse("451 4.7.1 greylisted, try again later", times=2)
    config = relay_config()
    daemon = await start_daemon(config)
    await asyncio.to_thread(send_credentials, daemon.port)
    [mail] = await eventually(
        lambda: [m for m in outbox(config) if m["state"] == "sent"], "delivery"
    )
    assert smarthost.refused == 2 and len(smarthost.mails()) == 1
    assert mail["attempts"] == 3
    assert mail["last_error"] == "451 4.7.1 greylisted, try again later"


async def test_a_hung_smarthost_times_out_and_the_mail_goes_later(
    relay_config, smarthost, start_daemon
):
    hung = HungSmarthost(smarthost.port)
    config = relay_config(timeout_seconds=1)
    daemon = await start_daemon(config)
    try:
        await asyncio.to_thread(send_credentials, daemon.port)
        [waiting] = await eventually(
            lambda: [m for m in outbox(config) if m["attempts"] >= 1], "a timed-out attempt"
        )
        assert "timed out" in waiting["last_error"] and waiting["state"] == "queued"
    finally:
        hung.stop()
    smarthost.start()
    await eventually(lambda: [m for m in outbox(config) if m["state"] == "sent"], "delivery")
    assert len(smarthost.mails()) == 1


async def test_mail_left_in_the_outbox_is_delivered_after_a_restart(
    relay_config, smarthost, start_daemon
):
    # A long backoff: only the restart can make the second attempt happen in this test.
    config = relay_config(retry_base_seconds=3600, retry_max_seconds=3600)
    first = await start_daemon(config)
    await asyncio.to_thread(send_credentials, first.port)
    await eventually(lambda: [m for m in outbox(config) if m["attempts"] == 1], "one attempt")
    await first.stop(grace=5)
    assert PASSWORD.encode() in config.outbox_path().read_bytes()  # kept until delivered

    smarthost.start()
    await start_daemon(config)
    [mail] = await eventually(
        lambda: [m for m in outbox(config) if m["state"] == "sent"], "delivery after restart"
    )
    assert mail["attempts"] == 2
    assert len(smarthost.mails()) == 1


async def test_an_unreachable_smarthost_costs_one_timeout_per_retry_not_one_per_mail(
    relay_config, smarthost, start_daemon
):
    hung = HungSmarthost(smarthost.port)
    config = relay_config(timeout_seconds=1, retry_base_seconds=3600, retry_max_seconds=3600)
    try:
        first = await start_daemon(config)
        for n in range(3):
            await asyncio.to_thread(send_credentials, first.port, f"p{n}@example.com")
        await eventually(lambda: len(outbox(config)) == 3, "three queued mails")
        await first.stop(grace=5)
        before = {m["id"]: m["attempts"] for m in outbox(config)}

        await start_daemon(config)  # a restart: all three are due at once

        def all_waiting_an_hour() -> bool:
            later = time.time() + 1800
            return all(datetime.fromisoformat(m["next_attempt_at"]).timestamp() > later
                       for m in outbox(config))

        await eventually(all_waiting_an_hour, "every mail waiting for the next retry")
        after = {m["id"]: m["attempts"] for m in outbox(config)}
        assert sum(after.values()) == sum(before.values()) + 1  # one timeout, not three
    finally:
        hung.stop()


async def test_give_up_deadline_and_permanent_refusal_end_as_failed(
    relay_config, smarthost, start_daemon
):
    config = relay_config(give_up_seconds=0)  # down, and no time to wait for it
    daemon = await start_daemon(config)
    await asyncio.to_thread(send_credentials, daemon.port)
    [mail] = await eventually(
        lambda: [m for m in outbox(config) if m["state"] == "failed"], "giving up"
    )
    assert mail["attempts"] == 1 and "gave up on jane@example.com" in mail["outcome"]

    smarthost.start()
    smarthost.refuse("550 5.1.1 no such user", times=1)
    await asyncio.to_thread(send_credentials, daemon.port, "nobody@example.com")
    [refused, _] = await eventually(
        lambda: [m for m in outbox(config) if m["state"] == "failed"][1:] and outbox(config),
        "the permanent refusal",
    )
    assert refused["attempts"] == 1
    assert "refused for nobody@example.com: 550 5.1.1 no such user" in refused["outcome"]
    await daemon.stop(grace=5)
    assert PASSWORD.encode() not in config.outbox_path().read_bytes()


async def test_each_recipient_gets_its_own_outcome(relay_config, smarthost, start_daemon):
    smarthost.start()
    smarthost.refuse_recipient("gone@example.com", "550 5.1.1 no such user", times=99)
    smarthost.refuse_recipient("full@example.com", "452 4.2.2 mailbox full", times=1)
    config = relay_config()
    daemon = await start_daemon(config)
    three = portal_mail("ok@example.com", "Welcome", "\nHello").replace(
        b"DATA\n", b"RCPT TO: gone@example.com\nRCPT TO: full@example.com\nDATA\n"
    )
    await asyncio.to_thread(send_raw, daemon.port, three)
    [mail] = await eventually(
        lambda: [m for m in outbox(config) if m["state"] == "sent"], "the last recipient"
    )
    # Delivered once to each recipient that can take it: the retry goes to full@ only.
    assert [m.rcpt_tos for m in smarthost.mails()] == [["ok@example.com"], ["full@example.com"]]
    assert mail["delivered"] == ["ok@example.com", "full@example.com"] and mail["pending"] == []
    assert mail["attempts"] == 2
    assert "refused for gone@example.com: 550 5.1.1 no such user" in mail["outcome"]


async def test_order_mail_is_never_relayed(relay_config, smarthost, start_daemon):
    smarthost.start()
    config = relay_config()
    daemon = await start_daemon(config)
    await asyncio.to_thread(
        send_portal_style, "127.0.0.1", daemon.port, "CREATE 4 825 jane@example.com",
        "WKSHP-API101",
    )
    # An order also addressed to a participant is still an order, and only that.
    both = portal_mail(
        "wodadmin@backend.example.org", "CLEANUP 4 825", "WKSHP-API101"
    ).replace(b"DATA\n", b"RCPT TO: jane@example.com\nDATA\n")
    await asyncio.to_thread(send_raw, daemon.port, both)
    reader = JournalReader(config.journal_path())
    jobs = await eventually(
        lambda: [j for j in reader.list_jobs() if j.state is JobState.DONE][1:] and
        reader.list_jobs(), "both orders done",
    )
    assert sorted(job.verb for job in jobs) == ["CLEANUP", "CREATE"]
    assert outbox(config) == [] and smarthost.mails() == []


async def test_relay_off_stores_nothing_and_records_the_refusal_headers_only(
    make_config, start_daemon
):
    config = make_config()  # no relay.host
    daemon = await start_daemon(config)
    replies = await asyncio.to_thread(send_credentials, daemon.port)
    assert b"550 " in replies and b"queued for relay" not in replies
    reader = JournalReader(config.journal_path())
    [job] = await eventually(lambda: reader.list_jobs(), "the refusal")
    assert job.state is JobState.REJECTED
    assert job.subject == "Workshops-on-Demand credentials"
    raw = reader.raw(job.id) or b""
    assert b"Subject: Workshops-on-Demand credentials" in raw and b"jane@example.com" in raw
    assert PASSWORD.encode() not in raw and b"User Name" not in raw
    assert not config.outbox_path().exists()


async def test_relaying_is_only_for_allowed_senders_and_networks(relay_config, smarthost,
                                                                 start_daemon):
    smarthost.start()
    config = relay_config(allowed_senders=["wod@example.org"])
    daemon = await start_daemon(config)
    replies = await asyncio.to_thread(send_credentials, daemon.port)
    assert (b"550 5.6.0 sender not allowed to relay: sender@example.org (envelope; not in"
            b" relay.allowed_senders)") in replies
    other = relay_config().model_copy(update={"allowed_networks": ["10.0.0.0/8"]})
    closed = await start_daemon(other.model_copy(update={"state_dir": config.state_dir / "b"}))

    def refused_at_connect() -> bytes:
        # The network check runs at connect (issue 8): one 554 line, then the server closes,
        # so whatever the client writes after it may meet a reset.
        with socket.create_connection(("127.0.0.1", closed.port), timeout=30) as sock:
            greeting = sock.recv(4096)
            with contextlib.suppress(OSError):
                sock.sendall(b"MAIL FROM: sender@example.org\n")
        with contextlib.suppress(ConnectionError):
            send_credentials(closed.port)
        return greeting

    greeting = await asyncio.to_thread(refused_at_connect)
    assert greeting == b"554 5.7.1 client 127.0.0.1 is not in allowed_networks\r\n"
    assert outbox(config) == [] and smarthost.mails() == []


async def test_cli_lists_the_outbox_without_any_message_text_and_prunes_it(
    relay_config, smarthost, start_daemon, capsys, tmp_path
):
    smarthost.start()
    config = relay_config(retry_base_seconds=3600, retry_max_seconds=3600)
    daemon = await start_daemon(config)
    await asyncio.to_thread(send_credentials, daemon.port)
    await eventually(lambda: [m for m in outbox(config) if m["state"] == "sent"], "delivery")
    smarthost.refuse("421 4.3.2 shutting down", times=1)
    await asyncio.to_thread(send_credentials, daemon.port, "joe@example.net")
    await eventually(lambda: [m for m in outbox(config) if m["last_error"]], "a failed try")
    config_file = tmp_path / "wodmail.yml"
    config_file.write_text(json.dumps({"state_dir": str(config.state_dir)}))
    assert await asyncio.to_thread(cli.main, ["relay", "--json", "--config", str(config_file)]) == 0
    [waiting, sent] = json.loads(capsys.readouterr().out)
    assert (sent["state"], sent["recipients"], sent["subject"]) == (
        "sent", ["jane@example.com"], "Workshops-on-Demand credentials")
    assert (waiting["state"], waiting["pending"]) == ("queued", ["joe@example.net"])
    assert waiting["last_error"] == "421 4.3.2 shutting down" and waiting["next_attempt_at"]
    assert "message" not in sent
    assert await asyncio.to_thread(cli.main, ["relay", "--config", str(config_file)]) == 0
    table = capsys.readouterr().out
    assert "sent" in table and "jane@example.com" in table and PASSWORD not in table

    prune = ["prune", "--older-than", "0", "--yes", "--config", str(config_file)]
    assert await asyncio.to_thread(cli.main, prune) == 0
    assert "1 relayed mails finished more than 0 days ago deleted" in capsys.readouterr().out
    assert [m["pending"] for m in outbox(config)] == [["joe@example.net"]]


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_tls_and_login_to_a_smarthost_that_requires_them(
    tls, make_config, start_daemon, tmp_path, log_stream
):
    certificate = make_certificate(tmp_path)
    smarthost = Smarthost(tls=tls, certificate=certificate, login=("wod", "relay-Secret-9"))
    smarthost.start()
    try:
        relay = {
            "host": "127.0.0.1", "port": smarthost.port, "order_recipients": ["@backend"],
            "tls": tls, "user": "wod", "password": "relay-Secret-9",
            "retry_base_seconds": 3600, "retry_max_seconds": 3600,
            "allowed_senders": [PORTAL_SENDER],
        }
        untrusted = make_config(relay=relay)  # no ca_file: the system CAs do not know it
        daemon = await start_daemon(untrusted)
        await asyncio.to_thread(send_credentials, daemon.port)
        [waiting] = await eventually(lambda: [m for m in outbox(untrusted) if m["attempts"]],
                                     "an untrusted certificate")
        assert "CERTIFICATE_VERIFY_FAILED" in waiting["last_error"]
        await daemon.stop(grace=5)

        wrong = make_config(relay={**relay, "password": "wrong-Secret-1",
                                   "ca_file": str(certificate[0])})
        daemon = await start_daemon(wrong)
        [waiting] = await eventually(lambda: [m for m in outbox(wrong) if m["attempts"] == 2],
                                     "a refused login")
        # A refused login is the admin's to fix: retried, never a reason to drop the mail.
        assert waiting["state"] == "queued" and waiting["last_error"].startswith("535 ")
        await daemon.stop(grace=5)

        right = make_config(relay={**relay, "password": "relay-Secret-9",
                                   "ca_file": str(certificate[0])})
        await start_daemon(right)
        await eventually(lambda: [m for m in outbox(right) if m["state"] == "sent"], "delivery")
        assert [m.rcpt_tos for m in smarthost.mails()] == [["jane@example.com"]]
        assert [m["attempts"] for m in outbox(right)] == [3]
        logged = log_stream.getvalue()
        assert "relay-Secret-9" not in logged and "wrong-Secret-1" not in logged
    finally:
        smarthost.stop()


def test_a_relay_login_needs_tls_and_its_password_is_masked(make_config):
    from wodmail.configcheck import describe
    from wodmail.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="relay.user needs relay.tls"):
        make_config(relay={"host": "smtp.example.org", "user": "wod", "password": "x"})
    config = make_config(relay={"host": "smtp.example.org", "tls": "starttls", "user": "wod",
                                "password": "relay-Secret-9"})
    assert describe(config)["relay"]["password"] == "***"


# --- the pieces ------------------------------------------------------------------------------


def test_order_mailbox_matches_addresses_and_domains():
    mailbox = OrderMailbox(["@Backend.Example.org", "wod@api.example.org"])
    assert "wodadmin@backend.example.org" in mailbox
    assert "<WODADMIN@BACKEND.EXAMPLE.ORG.>" in mailbox
    assert "wod@api.example.org" in mailbox and "other@api.example.org" not in mailbox
    assert "wodadmin" in mailbox  # no domain: local, as Postfix took it
    assert "jane@example.com" not in mailbox
    assert mailbox.wants(["jane@example.com", "wodadmin@backend.example.org"])
    assert not mailbox.wants(["jane@example.com"])


def test_default_order_recipients_are_the_backends_names():
    found = default_order_recipients(
        {"WODBEFQDN": "be-int.example.org", "WODBEEXTFQDN": "be1.example.org:8443:https,be2.x"}
    )
    assert found[:2] == ["@localhost", "@localhost.localdomain"]
    assert {"@be-int.example.org", "@be1.example.org", "@be2.x"} <= set(found)
    assert f"@{socket.getfqdn().lower()}" in found
    assert relay_hostname({"WODBEFQDN": "be-int.x", "WODBEEXTFQDN": "Be1.X.:8443,be2.x"}) == "be1.x"
    assert relay_hostname({"WODBEFQDN": "be-int.x"}) == "be-int.x"
    assert relay_hostname({}) == socket.getfqdn()
    unrendered = default_order_recipients({"WODBEFQDN": "{{ ansible_fqdn }}"})
    assert not any("{" in entry for entry in unrendered)


def test_prepare_adds_only_what_is_missing_and_ends_a_headerless_block():
    prepared = prepare_message(
        b"Subject: hi\nHello: not a header? yes it is\nplain text\n.\n", mail_from="a@b.c",
        peer="127.0.0.1", helo="api", hostname="be.example.org", received_at=0.0,
    )
    lines = prepared.message.split(b"\r\n")
    assert lines[2:4] == [b"Subject: hi", b"Hello: not a header? yes it is"]
    assert lines[4:7] == [b"From: <a@b.c>", b"Date: Thu, 01 Jan 1970 00:00:00 +0000",
                          b"Message-ID: " + prepared.message_id.encode()]
    assert lines[7:] == [b"", b"plain text", b".", b""]
    assert prepared.subject == "hi"


def test_check_config_names_the_derived_order_recipients(make_config):
    from wodmail.configcheck import check

    config = make_config(relay={"host": "smtp.example.org"},
                         vars={"WODBEEXTFQDN": "be.example.org"})
    _, warnings = check(config)
    [warning] = [w for w in warnings if w.startswith("relay.order_recipients")]
    assert "@be.example.org" in warning and "relayed to smtp.example.org" in warning
    assert "WODBEFQDN is unknown" not in warning
    assert any("relay.allowed_senders is empty" in w and "every mail to relay is refused" in w
               for w in warnings)
    _, warnings = check(make_config(relay={"host": "smtp.example.org"},
                                    allowed_senders=["wod@example.org"]))
    assert any("WODBEFQDN is unknown: set relay.order_recipients" in w for w in warnings)
    assert not any("relay.allowed_senders is empty" in w for w in warnings)
