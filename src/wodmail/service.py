"""The daemon: journal + dispatcher + SMTP intake in one asyncio process."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
from typing import Any

import structlog

from wodmail.backend import load_base_variables
from wodmail.config import Config
from wodmail.dispatcher import Dispatcher, Runner
from wodmail.errors import WodmailError
from wodmail.intake import IntakeHandler
from wodmail.journal import Journal
from wodmail.relay import OrderMailbox, Relay, default_order_recipients
from wodmail.smtp import SessionFactory, create_server_factory

log = structlog.get_logger(__name__)

STOP_GRACE_SECONDS = 30.0


class Daemon:
    """One wodmail instance. `start` recovers unfinished orders before taking new ones."""

    def __init__(self, config: Config, runner: Runner) -> None:
        self.config = config
        self._runner = runner
        self.journal: Journal | None = None
        self.dispatcher: Dispatcher | None = None
        self._server: asyncio.base_events.Server | None = None
        self._sessions: SessionFactory | None = None
        self._queue_watch: asyncio.Task[None] | None = None
        self._queue_wake = asyncio.Event()
        self.relay: Relay | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        config = self.config
        try:
            self.journal = Journal(
                config.journal_path(),
                dedup_window=config.dedup_window_seconds,
                refusals_per_peer=config.max_refusals_per_peer,
            )
        except (OSError, sqlite3.Error) as exc:
            raise WodmailError(f"cannot open the journal {config.journal_path()}: {exc}") from None
        self.dispatcher = Dispatcher(
            self.journal, self._runner, concurrency=config.dispatch.concurrency
        )
        await self.dispatcher.start()
        recovered = self.journal.unfinished()
        for job in recovered:
            self.dispatcher.submit(job)
        if recovered:
            log.info("resuming unfinished orders", count=len(recovered))
        self._queue_watch = asyncio.get_running_loop().create_task(
            self._watch_queue(), name="queue-watch"
        )
        variables = load_base_variables(config)
        senders = config.senders(variables)
        if config.relay.host:
            self.relay = Relay(
                config.relay,
                config.outbox_path(),
                OrderMailbox(order_recipients(config, variables)),
                hostname=socket.getfqdn(),
            )
            try:
                await self.relay.start()
            except (OSError, sqlite3.Error) as exc:
                self.relay = None
                await self.stop(grace=0)
                raise WodmailError(
                    f"cannot open the outbox {config.outbox_path()}: {exc}"
                ) from None
        handler = IntakeHandler(
            config, self.journal, self.dispatcher, senders=senders, relay=self.relay
        )
        self._sessions = create_server_factory(handler, data_size_limit=config.max_message_bytes)
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self._sessions, config.listen.host, config.listen.port
            )
        except OSError as exc:
            await self.stop(grace=0)
            raise WodmailError(
                f"cannot listen on {config.listen.host}:{config.listen.port}: "
                f"{exc.strerror or exc} (is Postfix, or another wodmail, still on that port?)"
            ) from None
        if not senders:
            log.warning("allowed_senders is empty: orders from any sender are accepted")
        log.info(
            "wodmail listening",
            host=config.listen.host,
            port=self.port,
            journal=str(config.journal_path()),
        )

    def wake_queue(self) -> None:
        """Look for orders queued by `wodmail retry` now (SIGUSR1), not at the next poll."""
        self._queue_wake.set()

    async def _watch_queue(self) -> None:
        """Picks up orders put back in the queue through the journal (`wodmail retry`)."""
        assert self.journal is not None and self.dispatcher is not None
        while True:
            try:
                await asyncio.wait_for(
                    self._queue_wake.wait(), self.config.dispatch.queue_poll_seconds
                )
            except TimeoutError:
                pass
            self._queue_wake.clear()
            try:
                queued = self.journal.queued()
            except sqlite3.Error as exc:
                log.warning("cannot read the queue from the journal", error=str(exc))
                continue
            for job in queued:
                if not self.dispatcher.holds(job.id):
                    log.info("order queued again", job=job.id, attempt=len(job.attempt_log))
                    self.dispatcher.submit(job)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self._queue_watch is not None:
            self._queue_watch.cancel()
            self._queue_watch = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._sessions is not None:
            # Sessions still committing an order the client already sent (the portal never
            # waits for the reply) must finish before the journal closes.
            left = await self._sessions.wait_finished(grace)
            if left:
                log.warning("SMTP sessions still open at shutdown", count=left)
        if self.relay is not None:
            await self.relay.stop(grace)
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
        if self.journal is not None:
            self.journal.close()
        close = getattr(self._runner, "aclose", None)
        if close is not None:
            await close()
        log.info("wodmail stopped")


def order_recipients(config: Config, variables: dict[str, Any]) -> list[str]:
    """relay.order_recipients, else the backend's own names (see relay.py)."""
    if config.relay.order_recipients is not None:
        return config.relay.order_recipients
    return default_order_recipients(variables)


async def serve_forever(config: Config, runner: Runner) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully."""
    daemon = Daemon(config, runner)
    await daemon.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, daemon.wake_queue)
    try:
        await stop.wait()
    finally:
        await daemon.stop()


def check(config: Config) -> tuple[list[str], list[str]]:
    """What would stop the daemon (errors) or surprise an admin (warnings)."""
    from wodmail import hooks
    from wodmail.errors import ConfigurationError

    errors: list[str] = []
    warnings: list[str] = []
    try:
        load_base_variables(config)
    except WodmailError as exc:
        errors.append(str(exc))
    try:
        hooks.Hooks.from_config(config)
    except ConfigurationError as exc:
        errors.append(str(exc))
    else:
        warnings.extend(hooks.check(config))
    trees = [config.notebooks.public, config.notebooks.private]
    if all(tree is None for tree in trees):
        warnings.append("no notebooks folder configured: workshop names are not checked")
    for tree in trees:
        if tree is not None and not tree.is_dir():
            errors.append(f"notebooks folder {tree} does not exist")
    if not config.students_dir.is_dir():
        warnings.append(f"students_dir {config.students_dir} does not exist")
    try:
        if not config.senders(load_base_variables(config)):
            warnings.append("allowed_senders is empty: orders from any sender are accepted")
    except WodmailError:
        pass  # already reported above
    warnings.extend(_relay_warnings(config))
    for name, section in (("portal", config.portal.url), ("hub", config.hub.url)):
        if not section:
            warnings.append(f"{name}.url is not set: its callbacks are skipped")
    return errors, warnings


def _relay_warnings(config: Config) -> list[str]:
    if not config.relay.host or config.relay.order_recipients is not None:
        return []
    try:
        variables = load_base_variables(config)
    except WodmailError:
        return []
    recipients = ", ".join(order_recipients(config, variables))
    warning = f"relay.order_recipients not set: mail to {recipients} is taken as orders"
    if not any(variables.get(key) for key in ("WODBEFQDN", "WODBEEXTFQDN")):
        warning += " (WODBEFQDN is unknown: set relay.order_recipients)"
    return [warning + f"; mail to anyone else is relayed to {config.relay.host}"]


def describe(config: Config) -> dict[str, Any]:
    """What `wodmail check-config` prints: the effective settings, secrets masked."""
    data = config.model_dump(mode="json")
    for section, key in (("portal", "password"), ("hub", "token"), ("accounts", "password")):
        if data.get(section, {}).get(key):
            data[section][key] = "***"
    ldap = data.get("accounts", {}).get("ldap", {})
    if ldap.get("password"):
        ldap["password"] = "***"
    return data
