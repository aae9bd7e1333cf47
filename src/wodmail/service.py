"""The daemon: journal + dispatcher + SMTP intake in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sqlite3
import time

import structlog

from wodmail import metrics
from wodmail.config import Config, Status, load_base_variables, load_config
from wodmail.dispatch.dispatcher import Dispatcher, Runner
from wodmail.errors import WodmailError
from wodmail.host.children import watch_children_with_pidfds
from wodmail.intake.bursts import BurstLog
from wodmail.intake.gate import ConnectionGate, GatePolicy
from wodmail.intake.handler import IntakeHandler
from wodmail.intake.loopguard import LoopErrors
from wodmail.intake.smtp import SessionFactory, create_server_factory
from wodmail.journal.jobs import JobState
from wodmail.journal.store import Journal, hold_daemon_lock
from wodmail.relay.routing import OrderMailbox, order_recipients, relay_hostname
from wodmail.relay.sender import Relay
from wodmail.status.listener import StatusServer
from wodmail.status.systemd import Notifier, inherited_sockets, watchdog_interval
from wodmail.status.token import read_token

log = structlog.get_logger(__name__)

# Sessions get this long at shutdown to finish what their client already sent; idle ones end
# at once. Running orders get `dispatch.stop_grace_seconds`. Both fit in TimeoutStopSec=45.
SESSION_GRACE_SECONDS = 5.0
HEARTBEAT_SECONDS = 1.0
# Settings the running daemon cannot change: a reload keeps the running values.
RESTART_ONLY = ("listen", "state_dir", "relay", "status")


class Daemon:
    """One wodmail instance. `start` recovers unfinished orders before taking new ones."""

    def __init__(self, config: Config, runner: Runner, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self._runner = runner
        self.notifier = notifier or Notifier(None)
        self.journal: Journal | None = None
        self.dispatcher: Dispatcher | None = None
        self._handler: IntakeHandler | None = None
        self._server: asyncio.base_events.Server | None = None
        self._sessions: SessionFactory | None = None
        self._queue_watch: asyncio.Task[None] | None = None
        self._queue_wake = asyncio.Event()
        self.relay: Relay | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.last_beat = time.monotonic()  # when the event loop last ran the heartbeat
        self.config_generation = 1  # one more per reload applied (shown by /healthz)
        self.last_reload: str | None = None  # "applied" or "refused", once reloaded
        self.reloads = 0  # reloads finished, applied or refused
        self.gate: ConnectionGate | None = None
        self._loop_errors = LoopErrors()
        self.status: StatusServer | None = None
        self._status_token: str | None = None
        self._inherited = False  # the SMTP socket came from systemd (socket activation)
        self._lock: int | None = None  # the journal's daemon lock (see hold_daemon_lock)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("not started")
        return str(self._server.sockets[0].getsockname()[0])

    @property
    def accepting(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def sessions(self) -> SessionFactory | None:
        return self._sessions

    async def start(self) -> None:
        config = self.config
        watch_children_with_pidfds()  # Python 3.11: no thread per program run
        # A token file other users could read would protect nothing: refuse before anything.
        self._status_token = status_token(config.status)
        self.notifier.status("recovering the journal")
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock = hold_daemon_lock(config.journal_path())
            self.journal = Journal(
                config.journal_path(),
                dedup_window=config.dedup_window_seconds,
                refusals_per_peer=config.max_refusals_per_peer,
            )
        except (OSError, sqlite3.Error) as exc:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
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
                hostname=relay_hostname(variables),
                senders=config.relay_senders(variables),
            )
            try:
                await self.relay.start()
            except (OSError, sqlite3.Error) as exc:
                self.relay = None
                await self.stop(grace=0)
                raise WodmailError(
                    f"cannot open the outbox {config.outbox_path()}: {exc}"
                ) from None
        self._handler = IntakeHandler(
            config, self.journal, self.dispatcher, senders=senders, relay=self.relay
        )
        self._loop_errors.install(asyncio.get_running_loop())
        self.gate = ConnectionGate(GatePolicy.from_config(config))
        self._sessions = create_server_factory(
            self._handler,
            data_size_limit=config.max_message_bytes,
            greeting_timeout=config.listen.greeting_timeout_seconds,
            gate=self.gate,
            on_input=self.dispatcher.intake_first.input_received,
        )
        try:
            self._server = await self._listen()
        except OSError as exc:
            await self.stop(grace=0)
            raise WodmailError(
                f"cannot listen on {_addresses(config)}: "
                f"{exc.strerror or exc} (is Postfix, or another wodmail, still on that port?)"
            ) from None
        if not senders:
            log.warning("allowed_senders is empty: orders from any sender are accepted")
        warn_if_too_few_files(config.listen.max_connections)
        log.info(
            "wodmail listening",
            host=self.host,
            port=self.port,
            journal=str(config.journal_path()),
            inherited=self._inherited,
            config=str(config.source or "(embedded defaults)"),
            local_users=list(self.gate.policy.local_users.shown),
        )
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        await self._start_status()
        self.notifier.ready(self.status_text())

    async def _listen(self) -> asyncio.base_events.Server:
        """The SMTP listener: the socket systemd passed (wodmail.socket), else listen.*."""
        loop = asyncio.get_running_loop()
        assert self._sessions is not None
        inherited = inherited_sockets()
        if inherited:
            self._inherited = True
            if len(inherited) > 1:
                log.warning("several sockets passed; only the first one is used",
                            count=len(inherited))
            # asyncio calls listen() again on the socket it is given: without an explicit
            # backlog, its default (100) would replace the socket unit's Backlog= for as long
            # as the socket lives, restarts included.
            return await loop.create_server(
                self._sessions, sock=inherited[0], backlog=self.config.listen.backlog
            )
        hosts = self.config.listen.hosts
        return await loop.create_server(
            self._sessions, hosts[0] if len(hosts) == 1 else hosts, self.config.listen.port,
            backlog=self.config.listen.backlog,
        )

    async def _start_status(self) -> None:
        address = self.config.status.address()
        if address is None:
            return
        assert self.journal is not None
        self.status = StatusServer(
            self, self.journal, self.config.status, token=self._status_token,
            refusals=BurstLog("status listener refusals (summary of a burst)"),
        )
        try:
            await self.status.start()
        except OSError as exc:
            # Orders matter more than their dashboard: wodmail runs on without it.
            self.status = None
            log.error("status listener not started; orders are taken all the same",
                      listen=self.config.status.listen, error=exc.strerror or str(exc))
        metrics.watch(self)

    # -- what the status listener and /metrics read ----------------------------------------

    async def probe_journal(self) -> None:
        if self.journal is None:
            raise WodmailError("the journal is not open")
        await self.journal.probe()

    def lanes(self) -> dict[str, tuple[int, int]]:
        return self.dispatcher.lane_counts() if self.dispatcher is not None else {}

    def open_sessions(self) -> int:
        return self._sessions.live() if self._sessions is not None else 0

    def key_pool_size(self) -> int | None:
        backend = getattr(self._runner, "backend", None)
        keys = getattr(backend, "keys", None)
        return None if keys is None else len(keys)

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
            # Only the ids, every second: the orders this daemon already holds (a backlog
            # of thousands during a burst) are not read again.
            try:
                missing = [i for i in self.journal.queued_ids() if not self.dispatcher.holds(i)]
                queued = self.journal.get_many(missing) if missing else []
            except sqlite3.Error as exc:
                log.warning("cannot read the queue from the journal", error=str(exc))
                continue
            for job in queued:
                if job.state is JobState.ACCEPTED:  # still queued at this read
                    log.info("order queued again", job=job.id, attempt=len(job.attempt_log))
                    self.dispatcher.submit(job)

    def status_text(self) -> str:
        """What systemctl status shows: where it listens, orders running and waiting."""
        if self.dispatcher is None or self._server is None:
            return "starting"
        running, waiting = self.dispatcher.counts()
        return (
            f"listening on {self.host}:{self.port}; "
            f"{running} orders running, {waiting} waiting"
        )

    async def _beat(self) -> None:
        """Proves the event loop alive: WATCHDOG=1 while it runs (a wedged loop stops them,
        and systemd restarts the service), STATUS= when it changes."""
        interval = watchdog_interval()
        period = min(HEARTBEAT_SECONDS, interval) if interval else HEARTBEAT_SECONDS
        last_ping = 0.0
        shown = ""
        while True:
            self.last_beat = now = time.monotonic()
            if interval and now - last_ping >= interval and self._journal_alive():
                self.notifier.watchdog()
                last_ping = now
            text = self.status_text()
            if text != shown:
                self.notifier.status(text)
                shown = text
            await asyncio.sleep(period)

    def _journal_alive(self) -> bool:
        return self.journal is not None and self.journal.alive()

    async def reload(self) -> bool:
        """Reads the configuration again and applies it to new orders, keeping connections;
        a bad one is refused with the reason and the running one stays."""
        self.notifier.reloading()
        try:
            # In a thread: reading the installation sources wod.sh with bash.
            config = await asyncio.to_thread(load_config, self.config.source)
            self._apply(config)
        except WodmailError as exc:
            reason = "; ".join(str(exc).splitlines())
            log.error("configuration not reloaded; the running one stays", reason=reason)
            self.last_reload = "refused"
            return False
        finally:
            self.reloads += 1
            self.notifier.ready(self.status_text())
        return True

    def _apply(self, config: Config) -> None:
        kept = [key for key in RESTART_ONLY if getattr(config, key) != getattr(self.config, key)]
        if kept:
            config = config.model_copy(update={key: getattr(self.config, key) for key in kept})
        variables = load_base_variables(config)
        senders = config.senders(variables)
        reconfigure = getattr(self._runner, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(config)  # may refuse the config: nothing is applied before it
        assert self._handler and self._sessions and self.dispatcher and self.journal
        self._handler.configure(config, senders)
        if self.relay is not None:
            # relay.* waits for a restart, but its default senders follow allowed_senders
            # and WODSENDER, which a reload changes.
            self.relay.policy.configure(config.relay_senders(variables))
        self._sessions.update(data_size_limit=config.max_message_bytes)
        if self.gate is not None:
            self.gate.configure(GatePolicy.from_config(config))
        self.dispatcher.resize(config.dispatch.concurrency)
        self.journal.dedup_window = config.dedup_window_seconds
        self.journal.refusals_per_peer = config.max_refusals_per_peer
        self.config = config
        self.config_generation += 1
        self.last_reload = "applied"
        if kept:
            log.warning("changed settings take effect on the next restart", keys=kept)
        log.info("configuration reloaded", source=str(config.source or "(embedded defaults)"),
                 allowed_senders=len(senders), concurrency=config.dispatch.concurrency,
                 generation=self.config_generation)

    async def stop(self, grace: float | None = None) -> None:
        if grace is None:
            grace = self.config.dispatch.stop_grace_seconds
        if self.dispatcher is not None:
            running, _waiting = self.dispatcher.counts()
            self.notifier.stopping(f"stopping: {running} orders get up to {grace:g} s")
        metrics.unwatch(self)
        if self.status is not None:
            await self.status.stop()
            self.status = None
        for task in (self._heartbeat, self._queue_watch):
            if task is not None:
                task.cancel()
        self._heartbeat = self._queue_watch = None
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections
        if self.gate is not None:
            self.gate.refused.flush()  # the summary of a burst still in its window
        if self._handler is not None:
            self._handler.unrecorded_refusals.flush()
        self._loop_errors.accept_failures.flush()
        if self._sessions is not None:
            # Sessions still committing an order the client already sent (the portal never
            # waits for the reply) finish before the journal closes; idle ones end now.
            left = await self._sessions.wait_finished(SESSION_GRACE_SECONDS)
            if left:
                log.warning("SMTP sessions still open at shutdown", count=left)
        if server is not None:
            # Python >= 3.12 waits here for every connection: sessions left past their grace
            # must not hold up the stop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), SESSION_GRACE_SECONDS)
        if self.gate is not None:
            self.gate.close()  # its netlink sockets; no connection comes any more
        # At the same time, so that the whole stop stays within one grace.
        stopping = [part.stop(grace) for part in (self.relay, self.dispatcher) if part is not None]
        await asyncio.gather(*stopping)
        if self.journal is not None:
            self.journal.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        close = getattr(self._runner, "aclose", None)
        if close is not None:
            await close()
        log.info("wodmail stopped")


# Descriptors a daemon needs besides its SMTP sessions: the journal, the listening socket,
# logs, hooks' pipes, HTTP connections to the portal and hub.
_FILES_BESIDES_SESSIONS = 64


def warn_if_too_few_files(max_connections: int) -> None:
    """Warn when listen.max_connections sessions could run out of open files (RLIMIT_NOFILE)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + _FILES_BESIDES_SESSIONS
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit too low for listen.max_connections",
            limit=soft,
            needed=needed,
            max_connections=max_connections,
        )


async def serve_forever(config: Config, runner: Runner) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully; SIGHUP reloads the config."""
    daemon = Daemon(config, runner, notifier=Notifier.from_environment())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()

    def on_stop(signum: signal.Signals) -> None:
        log.info("signal received: stopping", signal=signum.name)
        stop.set()

    def on_reload() -> None:
        if daemon.dispatcher is None or stop.is_set():
            log.warning("signal received: reload ignored (starting or stopping)", signal="SIGHUP")
            return
        log.info("signal received: reloading the configuration", signal="SIGHUP")
        task = loop.create_task(daemon.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def on_wake() -> None:
        log.info("signal received: looking for queued orders", signal="SIGUSR1")
        daemon.wake_queue()

    # Installed before READY=1: a reload or stop right after it must find them.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    loop.add_signal_handler(signal.SIGUSR1, on_wake)
    await daemon.start()
    try:
        await stop.wait()
    finally:
        if reloads:
            await asyncio.wait(reloads)
        await daemon.stop()
        daemon.notifier.close()


def status_token(settings: Status) -> str | None:
    """The status listener's bearer token, when it listens and `status.token_file` is set."""
    if settings.listen is None or settings.token_file is None:
        return None
    return read_token(settings.token_file)


def _addresses(config: Config) -> str:
    return ", ".join(f"{host}:{config.listen.port}" for host in config.listen.hosts)
