"""One SMTP session with the smarthost to deliver a relayed mail.

`deliver` hands the message `message.prepare_message` made to the smarthost with `smtplib`
(blocking: the sender runs it in a thread) and says, recipient by recipient, what became of
it. No message text is ever logged.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

from wodmail.config import Relay as RelaySettings

_SHOWN_MAX = 200


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
