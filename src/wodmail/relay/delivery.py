"""What leaves for the smarthost, and one SMTP session to deliver it.

`prepare_message` turns the mail as received into what a relaying MTA sends on; `deliver`
hands it to the smarthost with `smtplib` (blocking: the sender runs it in a thread) and
says, recipient by recipient, what became of it. No message text is ever logged.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from wodmail.config import Relay as RelaySettings

_SHOWN_MAX = 200
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_LINE_ENDING = re.compile(rb"\r?\n")


# --- the message as it leaves ----------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """The bytes handed to the smarthost, and what the outbox listing shows of them."""

    message: bytes
    subject: str | None
    message_id: str | None


def _header_end(lines: list[bytes]) -> tuple[int, bool]:
    """Index of the first line after the header block; True if a blank line ends it."""
    for index, line in enumerate(lines):
        if line == b"":
            return index, True
        if line[:1] in (b" ", b"\t") and index > 0:
            continue
        if not _HEADER_LINE.match(line):
            return index, False
    return len(lines), False


def _header_value(headers: list[bytes], name: bytes) -> str | None:
    for index, line in enumerate(headers):
        if line[: len(name) + 1].lower() == name + b":":
            value = line[len(name) + 1 :]
            for more in headers[index + 1 :]:
                if more[:1] not in (b" ", b"\t"):
                    break
                value += b" " + more.strip()
            return value.strip().decode("utf-8", "replace")[:_SHOWN_MAX] or None
    return None


def prepare_message(
    raw: bytes,
    *,
    mail_from: str,
    peer: str | None,
    helo: str | None,
    hostname: str,
    received_at: float,
) -> Prepared:
    """What a relaying MTA sends on: CRLF line endings, a Received line, and the From, Date
    and Message-ID the portal's bare mail lacks (it writes only a Subject); the header block
    is ended by a blank line when the client left it out. Nothing of the original is changed."""
    lines = _LINE_ENDING.split(raw)
    if lines and lines[-1] == b"":
        lines.pop()
    end, blank = _header_end(lines)
    headers, body = lines[:end], lines[end + 1 :] if blank else lines[end:]
    names = {line.split(b":", 1)[0].strip().lower() for line in headers if b":" in line}
    when = format_datetime(datetime.fromtimestamp(received_at, UTC))
    added: list[str] = []
    if b"from" not in names and mail_from:
        added.append(f"From: <{mail_from}>")
    if b"date" not in names:
        added.append(f"Date: {when}")
    message_id = _header_value(headers, b"message-id")
    if b"message-id" not in names:
        message_id = f"<{uuid.uuid4().hex}@{hostname}>"
        added.append(f"Message-ID: {message_id}")
    received = (
        f"Received: from {helo or 'unknown'} ([{peer or 'unknown'}])\r\n"
        f"\tby {hostname} (wodmail) with SMTP; {when}"
    )
    out = [received.encode(), *headers, *(line.encode() for line in added), b"", *body]
    return Prepared(
        message=b"\r\n".join(out) + b"\r\n",
        subject=_header_value(headers, b"subject"),
        message_id=message_id,
    )


# --- one delivery attempt ---------------------------------------------------------------------


@dataclass
class Attempt:
    """What one session with the smarthost did for each recipient."""

    delivered: list[str] = field(default_factory=list)
    temporary: dict[str, str] = field(default_factory=dict)  # retry these
    permanent: dict[str, str] = field(default_factory=dict)  # refused for good
    reply: str = ""
    unreachable: bool = False  # no session (connection, TLS, login): no use trying others now


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"[:_SHOWN_MAX]


def _sort(attempt: Attempt, recipients: Iterable[str], code: int, reason: str) -> None:
    target = attempt.permanent if 500 <= code < 600 else attempt.temporary
    for recipient in recipients:
        target[recipient] = reason


def deliver(
    settings: RelaySettings, helo: str, mail_from: str, recipients: list[str], message: bytes
) -> Attempt:
    """One SMTP session with the smarthost (blocking: run it in a thread).

    A failure before MAIL (connection, TLS, login) is always temporary, even a 5xx: it says
    something about the setup, which an admin can fix, not about the mail."""
    attempt = Attempt()
    client: smtplib.SMTP | None = None
    in_session = False
    try:
        client = _client(settings, helo)
        _open(client, settings)
        in_session = True
        _transaction(client, attempt, mail_from, recipients, message)
    except smtplib.SMTPResponseException as exc:
        attempt.unreachable = not in_session
        code = exc.smtp_code if in_session else 0
        _sort(attempt, _undecided(attempt, recipients), code,
              _reply(exc.smtp_code, exc.smtp_error))
    except (OSError, smtplib.SMTPException) as exc:
        attempt.unreachable = not in_session
        reason = f"{settings.host}:{settings.port}: {exc.__class__.__name__}: {exc}"
        _sort(attempt, _undecided(attempt, recipients), 0, reason[:_SHOWN_MAX])
    else:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass  # the mail is delivered; a lost QUIT changes nothing
    if client is not None:
        client.close()  # after a failure, no QUIT: a hung smarthost would cost another timeout
    return attempt


def _client(settings: RelaySettings, helo: str) -> smtplib.SMTP:
    """Connected (and for `tls`, encrypted); the host name is what the certificate must name."""
    assert settings.host is not None
    if settings.tls == "tls":
        return smtplib.SMTP_SSL(
            settings.host, settings.port, local_hostname=helo,
            timeout=settings.timeout_seconds, context=_tls(settings),
        )
    return smtplib.SMTP(
        settings.host, settings.port, local_hostname=helo, timeout=settings.timeout_seconds
    )


def _tls(settings: RelaySettings) -> ssl.SSLContext:
    """The smarthost's certificate is always verified (against `relay.ca_file` if set)."""
    return ssl.create_default_context(cafile=settings.ca_file)


def _open(client: smtplib.SMTP, settings: RelaySettings) -> None:
    if settings.tls == "starttls":
        client.ehlo()
        client.starttls(context=_tls(settings))
        client.ehlo()
    if settings.user:
        client.login(settings.user, settings.password)


def _undecided(attempt: Attempt, recipients: list[str]) -> list[str]:
    decided = {*attempt.delivered, *attempt.temporary, *attempt.permanent}
    return [recipient for recipient in recipients if recipient not in decided]


def _transaction(
    client: smtplib.SMTP, attempt: Attempt, mail_from: str, recipients: list[str], message: bytes
) -> None:
    client.ehlo_or_helo_if_needed()
    options = ["BODY=8BITMIME"] if not message.isascii() and client.has_extn("8bitmime") else []
    code, text = client.mail(mail_from, options)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, text, mail_from)
    accepted = []
    for recipient in recipients:
        code, text = client.rcpt(recipient)
        if code in (250, 251):
            accepted.append(recipient)
        else:
            _sort(attempt, [recipient], code, _reply(code, text))
    if not accepted:
        client.rset()
        return
    code, text = client.data(message)
    if code != 250:
        _sort(attempt, accepted, code, _reply(code, text))
        return
    attempt.delivered.extend(accepted)
    attempt.reply = _reply(code, text)
