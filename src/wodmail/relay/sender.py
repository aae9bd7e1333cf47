"""The relay's sender: takes relayed mail into the outbox and delivers it in the background.

A relayed mail is acknowledged only once the outbox holds it. A background sender delivers
it to the smarthost with `smtplib` in a thread, retrying transient failures with exponential
backoff until `relay.give_up_seconds` after its arrival.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from wodmail.config import Relay as RelaySettings
from wodmail.logs import register_secret
from wodmail.relay.delivery import Attempt, deliver
from wodmail.relay.message import prepare_message
from wodmail.relay.outbox import FAILED, SENT, Outbox
from wodmail.relay.policy import RelayPolicy
from wodmail.relay.routing import OrderMailbox

log = structlog.get_logger(__name__)


class Relay:
    """Takes relayed mail from the intake and delivers it in the background."""

    def __init__(
        self, settings: RelaySettings, path: Path, mailbox: OrderMailbox, *, hostname: str,
        senders: Iterable[str] = (),
    ) -> None:
        self._settings = settings
        self._path = path
        self.mailbox = mailbox
        self.policy = RelayPolicy(settings, senders)
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
            allowed_senders=sorted(self.policy.senders),
            max_recipients=self._settings.max_recipients,
            max_per_minute=self._settings.max_per_minute,
        )
        if not self.policy.senders:
            log.warning("relay.allowed_senders is empty (no allowed_senders, no WODSENDER):"
                        " every mail to relay is refused")

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
                self._outbox.add, message=prepared.message, subject=prepared.subject,
                message_id=prepared.message_id, mail_from=mail_from or "",
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
