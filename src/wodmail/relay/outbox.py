"""The relay: mail for anyone but the order mailbox, passed on to a smarthost.

When the portal has no SendGrid key it sends participants' welcome and credentials mails to
the backend's order port, as it sends orders; the old Postfix delivered mail for its own
names (`mydestination`) to procmail and relayed the rest. With `relay.host` set, wodmail does
the same: a mail none of whose recipients is in the order mailbox is relayed.

A relayed mail is committed to the outbox (SQLite, `state_dir/outbox.sqlite3`, mode 0600,
`synchronous=FULL`) before its 250. A background sender delivers it to the smarthost with
`smtplib` in a thread, retrying transient failures with exponential backoff until
`relay.give_up_seconds` after its arrival. The message itself is kept only while it is
undelivered: once delivered or given up, only its envelope, subject and outcome remain.
The outbox runs with a rollback journal and `secure_delete`, so a credentials mail's text is
overwritten in the file, not left in free pages or a write-ahead log. No message text is
ever logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import smtplib
import socket
import sqlite3
import ssl
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from wodmail.config import Config
from wodmail.config import Relay as RelaySettings
from wodmail.logs import register_secret

log = structlog.get_logger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    received_at REAL NOT NULL,
    peer TEXT,
    mail_from TEXT NOT NULL,
    recipients TEXT NOT NULL,
    pending TEXT NOT NULL,
    delivered TEXT NOT NULL DEFAULT '[]',
    subject TEXT,
    message_id TEXT,
    size INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    outcome TEXT NOT NULL DEFAULT '',
    finished_at REAL,
    message BLOB
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
"""
QUEUED, SENT, FAILED = "queued", "sent", "failed"
STATES = (QUEUED, SENT, FAILED)
PUBLIC_COLUMNS = (
    "id, state, received_at, peer, mail_from, recipients, pending, delivered, subject, "
    "message_id, size, attempts, next_attempt_at, last_error, outcome, finished_at"
)
_SHOWN_MAX = 200
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_LINE_ENDING = re.compile(rb"\r?\n")


# --- which mail is relayed ------------------------------------------------------------------


def _backend_names(variables: dict[str, Any], key: str) -> list[str]:
    """The host names in WODBEFQDN / WODBEEXTFQDN ("be1.example.org:443:https,be2...")."""
    value = variables.get(key)
    if not isinstance(value, str) or "{" in value:
        return []
    names = (item.split(":")[0].strip().lower().rstrip(".") for item in value.split(","))
    return [name for name in names if name]


def default_order_recipients(variables: dict[str, Any]) -> list[str]:
    """`@` every name the old Postfix delivered locally (its `mydestination`): the backend's
    WODBEFQDN and WODBEEXTFQDN (the portal writes to WODUSER@<the latter's first name>),
    localhost, and this machine's names."""
    names = ["localhost", "localhost.localdomain", socket.gethostname(), socket.getfqdn()]
    names += _backend_names(variables, "WODBEFQDN") + _backend_names(variables, "WODBEEXTFQDN")
    found = [f"@{name.strip().lower().rstrip('.')}" for name in names if name.strip()]
    return list(dict.fromkeys(found))


def relay_hostname(variables: dict[str, Any]) -> str:
    """The name wodmail gives itself to the smarthost (EHLO, Received, Message-ID): the old
    Postfix's `myhostname`, WODBEEXTFQDN, else WODBEFQDN, else this machine's FQDN."""
    names = _backend_names(variables, "WODBEEXTFQDN") + _backend_names(variables, "WODBEFQDN")
    return names[0] if names else socket.getfqdn()


def order_recipients(config: Config, variables: dict[str, Any]) -> list[str]:
    """relay.order_recipients, else the backend's own names (see `default_order_recipients`)."""
    if config.relay.order_recipients is not None:
        return config.relay.order_recipients
    return default_order_recipients(variables)


class OrderMailbox:
    """The recipients whose mail is an order: `user@domain` exactly, or any `@domain`.

    A recipient with no domain at all is local, hence an order recipient (Postfix appended
    its own name to it)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = [entry.strip().lower() for entry in entries]
        self.entries = entries
        self._addresses = {entry for entry in entries if not entry.startswith("@")}
        self._domains = {entry[1:].rstrip(".") for entry in entries if entry.startswith("@")}

    def __contains__(self, recipient: str) -> bool:
        address = recipient.strip().strip("<>").lower()
        local, at, domain = address.rpartition("@")
        if not at:
            return True
        return address in self._addresses or domain.rstrip(".") in self._domains

    def wants(self, recipients: Iterable[str]) -> bool:
        """Is a mail to these recipients an order? Yes if any of them is in the mailbox."""
        return any(recipient in self for recipient in recipients)


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


# --- the outbox on disk --------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def _public(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    for key in ("recipients", "pending", "delivered"):
        data[key] = json.loads(data[key])
    for key in ("received_at", "next_attempt_at", "finished_at"):
        if data[key] is not None:
            data[key] = datetime.fromtimestamp(data[key], UTC).isoformat()
    if data["state"] != QUEUED:
        data["next_attempt_at"] = None
    return data


class Outbox:
    """The outbox file. Not thread-safe: `Relay` calls it from one thread only."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._conn = _connect(path)
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def add(
        self, *, prepared: Prepared, mail_from: str, recipients: list[str], peer: str | None,
        received_at: float,
    ) -> int:
        cursor = self._conn.execute(
            "INSERT INTO outbox (state, received_at, peer, mail_from, recipients, pending, "
            "subject, message_id, size, next_attempt_at, message) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (QUEUED, received_at, peer, mail_from, json.dumps(recipients),
             json.dumps(recipients), prepared.subject,
             prepared.message_id, len(prepared.message), received_at, prepared.message),
        )
        return int(cursor.lastrowid or 0)

    def retry_all_now(self, now: float) -> int:
        """A start is a retry point: every queued mail is due at once."""
        cursor = self._conn.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE state = ?", (now, QUEUED)
        )
        return cursor.rowcount

    def due(self, now: float) -> list[sqlite3.Row]:
        return self._conn.execute(
            "SELECT * FROM outbox WHERE state = ? AND next_attempt_at <= ? ORDER BY id",
            (QUEUED, now),
        ).fetchall()

    def defer_due(self, until: float, now: float, give_up_seconds: float) -> int:
        """Mail due now waits until `until` (or its own give-up time, if sooner)."""
        cursor = self._conn.execute(
            "UPDATE outbox SET next_attempt_at = min(?, received_at + ?) "
            "WHERE state = ? AND next_attempt_at <= ?",
            (until, give_up_seconds, QUEUED, now),
        )
        return cursor.rowcount

    def next_due(self) -> float | None:
        row = self._conn.execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE state = ?", (QUEUED,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def update(self, mail_id: int, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        self._conn.execute(
            f"UPDATE outbox SET {columns} WHERE id = ?", (*values.values(), mail_id)
        )


def list_outbox(
    path: Path, *, states: list[str] | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The outbox as `wodmail relay` shows it, newest first; never the message text."""
    if not path.exists():
        return []
    query = f"SELECT {PUBLIC_COLUMNS} FROM outbox"
    params: list[Any] = []
    if states:
        query += f" WHERE state IN ({','.join('?' * len(states))})"
        params.extend(states)
    query += " ORDER BY id DESC"
    if limit is not None:
        query += " LIMIT ?"
        params.append(limit)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    try:
        return [_public(row) for row in conn.execute(query, params)]
    finally:
        conn.close()


def prune_outbox(path: Path, before: float) -> int:
    """Deletes mail finished (sent or failed) before `before`; queued mail is never touched."""
    if not path.exists():
        return 0
    conn = _connect(path)
    try:
        cursor = conn.execute(
            "DELETE FROM outbox WHERE state != ? AND finished_at < ?", (QUEUED, before)
        )
        return cursor.rowcount
    finally:
        conn.close()


# --- the relay -----------------------------------------------------------------------------


class Relay:
    """Takes relayed mail from the intake and delivers it in the background."""

    def __init__(
        self, settings: RelaySettings, path: Path, mailbox: OrderMailbox, *, hostname: str
    ) -> None:
        self._settings = settings
        self._path = path
        self.mailbox = mailbox
        self._hostname = hostname
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wodmail-outbox")
        self._outbox: Outbox | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def _in_db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._db, lambda: fn(*args, **kwargs)
        )

    async def start(self) -> None:
        register_secret(self._settings.password, permanent=True)
        self._outbox = await self._in_db(Outbox, self._path)
        waiting = await self._in_db(self._outbox.retry_all_now, time.time())
        if waiting:
            log.info("relaying mail left in the outbox", count=waiting)
        self._task = asyncio.create_task(self._run(), name="wodmail-relay")
        log.info(
            "relay on",
            smarthost=f"{self._settings.host}:{self._settings.port}",
            order_recipients=self.mailbox.entries,
        )

    async def stop(self, grace: float) -> None:
        """Lets an attempt under way finish (up to `grace` s), then closes the outbox."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=grace)
            if not done:
                self._task.cancel()
                log.warning("relay stopped during a delivery; it is retried after restart")
        if self._outbox is not None:
            await self._in_db(self._outbox.close)
        self._db.shutdown(wait=True)

    def is_order_mail(self, recipients: Iterable[str]) -> bool:
        return self.mailbox.wants(recipients)

    async def take(
        self, *, mail_from: str | None, recipients: list[str], raw: bytes, peer: str | None,
        helo: str | None,
    ) -> str:
        """Commits the mail to the outbox; returns the SMTP reply (250 only once stored)."""
        assert self._outbox is not None
        received_at = time.time()
        prepared = prepare_message(
            raw, mail_from=mail_from or "", peer=peer, helo=helo, hostname=self._hostname,
            received_at=received_at,
        )
        try:
            mail_id = await self._in_db(
                self._outbox.add, prepared=prepared, mail_from=mail_from or "",
                recipients=recipients, peer=peer, received_at=received_at,
            )
        except (OSError, sqlite3.Error) as exc:
            log.error("outbox write failed; mail not acknowledged", error=str(exc), peer=peer)
            return "451 4.3.0 could not store the mail for relaying, please try again"
        log.info(
            "mail queued for relay", relay_id=mail_id, mail_from=mail_from,
            recipients=recipients, size=len(prepared.message), peer=peer,
        )
        self._wake.set()
        return f"250 2.0.0 OK queued for relay as {mail_id}"

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                wait = await self._pass()
                failures = 0
            except Exception:  # the outbox itself failing (disk full ...): wait, then again
                failures += 1
                log.exception("relay pass failed; trying again", failures=failures)
                wait = self._backoff(failures)
            if wait == 0.0:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _pass(self) -> float | None:
        """Attempts every due mail; returns how long until the next is due (None: none is)."""
        assert self._outbox is not None
        for row in await self._in_db(self._outbox.due, time.time()):
            if self._stopping:
                return None
            try:
                if await self._attempt(row):
                    break  # the rest waits for the same retry time, not a timeout each
            except Exception:  # a bug must not stop the relay, nor spin it
                log.exception("relay attempt crashed", relay_id=row["id"])
                retry = time.time() + self._backoff(row["attempts"] + 1)
                await self._in_db(self._outbox.update, row["id"], next_attempt_at=retry,
                                  attempts=row["attempts"] + 1)
        next_due = await self._in_db(self._outbox.next_due)
        return None if next_due is None else max(0.0, next_due - time.time())

    async def _attempt(self, row: sqlite3.Row) -> bool:
        """One delivery attempt; True if the smarthost could not be reached (the other due
        mails are then deferred to this one's retry time)."""
        assert self._outbox is not None
        recipients: list[str] = json.loads(row["pending"])
        attempt = await asyncio.to_thread(
            deliver, self._settings, self._hostname, row["mail_from"], recipients,
            bytes(row["message"]),
        )
        now = time.time()
        values = self._outcome(row, attempt, now)
        await self._in_db(self._outbox.update, row["id"], **values)
        retry_at = values.get("next_attempt_at")
        if not attempt.unreachable or retry_at is None:
            return False
        deferred = await self._in_db(
            self._outbox.defer_due, retry_at, now, self._settings.give_up_seconds
        )
        if deferred:
            log.info("smarthost unreachable: other mails wait for the next try", count=deferred)
        return True

    def _outcome(self, row: sqlite3.Row, attempt: Attempt, now: float) -> dict[str, Any]:
        """The outbox columns after an attempt, and a log line for it."""
        mail_id, attempts = row["id"], row["attempts"] + 1
        delivered = json.loads(row["delivered"]) + attempt.delivered
        notes = [row["outcome"]] if row["outcome"] else []
        if attempt.delivered:
            notes.append(f"delivered to {', '.join(attempt.delivered)}: {attempt.reply}")
            log.info("mail relayed", relay_id=mail_id, recipients=attempt.delivered,
                     reply=attempt.reply, attempts=attempts)
        for recipient, reason in attempt.permanent.items():
            notes.append(f"refused for {recipient}: {reason}")
            log.warning("smarthost refused a recipient for good", relay_id=mail_id,
                        recipient=recipient, reason=reason)
        values: dict[str, Any] = {"attempts": attempts, "delivered": json.dumps(delivered)}
        pending = list(attempt.temporary)
        last_error = next(iter(attempt.temporary.values()), None)
        deadline = row["received_at"] + self._settings.give_up_seconds
        if pending and now >= deadline:
            notes.append(f"gave up on {', '.join(pending)} after {attempts} attempts: "
                         f"{last_error}")
            log.error("relay gave up", relay_id=mail_id, recipients=pending,
                      attempts=attempts, error=last_error)
            pending = []
        values.update(pending=json.dumps(pending), outcome="\n".join(notes))
        if last_error is not None:
            values["last_error"] = last_error
        if pending:
            delay = self._backoff(attempts)
            values["next_attempt_at"] = min(now + delay, deadline)
            log.warning("relay attempt failed; will retry", relay_id=mail_id, error=last_error,
                        attempts=attempts, retry_in_s=round(min(delay, deadline - now), 1))
        else:
            values.update(state=SENT if delivered else FAILED, finished_at=now, message=None)
        return values

    def _backoff(self, attempts: int) -> float:
        settings = self._settings
        delay = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
        return delay * random.uniform(0.8, 1.0)
