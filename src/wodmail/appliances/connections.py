"""The pool: one kept ssh connection per appliance, shared by every order.

A connection is opened at the first call to an appliance and kept: later calls, of the
same order or of others, open a channel on it (a few ms) instead of a new connection
(a TCP and ssh handshake and a login, ~0.1-0.4 s). At most `appliances.max_channels`
channels run at once on one appliance; more calls wait for a free one. A connection
unused for `appliances.idle_seconds` is closed. A kept connection found dead when a
channel is opened on it (the appliance rebooted, a firewall dropped it) is replaced by a
new one once, before the call fails: the command had not been sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import structlog

from wodmail.appliances._failures import channel_failure, connect_failure, dead
from wodmail.appliances.hostkeys import HostKeys, Judgement, fingerprint
from wodmail.appliances.login import Login, resolve_login
from wodmail.config import Appliances, Config
from wodmail.errors import PeerMisconfigured, PeerUnavailable, WodmailError
from wodmail.metrics import appliance_connection_opened

log = structlog.get_logger(__name__)

KEEPALIVE_SECONDS = 15.0
CLOSE_WAIT_SECONDS = 5.0


class _Client(asyncssh.SSHClient):
    """Judges a host key that none of the pinned ones matched, and pins a first one."""

    def __init__(self, hostkeys: HostKeys, address: str, port: int, judged: Judgement) -> None:
        self._hostkeys, self._address, self._port = hostkeys, address, port
        self.judged = judged

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        verdict = self._hostkeys.judge(self._address, self._port, key)
        self.judged.offered, self.judged.verdict = verdict.offered, verdict.verdict
        if verdict.verdict != "new":
            return False
        self._hostkeys.pin(self._address, self._port, key)
        return True


@dataclass
class _Entry:
    """One appliance: its connection (if open), its channel slots, its idle timer."""

    slots: asyncio.Semaphore
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    connection: asyncssh.SSHClientConnection | None = None
    busy: int = 0
    idle_timer: asyncio.TimerHandle | None = None
    host_key: str = ""
    """The fingerprint of the key the appliance offered, and its verdict (pinned, new)."""
    verdict: str = ""


class AppliancePool:
    """Connections to appliances, by address. `opened` counts connections ever opened."""

    def __init__(self, settings: Appliances, hostkeys: HostKeys, login: Any) -> None:
        self.settings = settings
        self.hostkeys = hostkeys
        self._login = login
        self._entries: dict[str, _Entry] = {}
        self.opened = 0

    @classmethod
    def from_config(cls, config: Config, *, record_keys: bool = True) -> AppliancePool:
        """`record_keys=False` (check-config): a first key is accepted but never pinned."""
        hostkeys = HostKeys(config.state_dir, config.appliances.known_hosts, record=record_keys)
        return cls(config.appliances, hostkeys, lambda: resolve_login(config))

    @staticmethod
    def settings_of(config: Config) -> tuple[Any, ...]:
        """What a pool depends on: a reload that changes none of it keeps the pool."""
        accounts = config.accounts
        return (config.appliances, config.state_dir, accounts.admin_user, accounts.root)

    def login_user(self) -> str:
        """Whom the pool logs in as (for messages; `?` when that is not configured)."""
        try:
            return str(self._login().user)
        except WodmailError:
            return "?"

    def open_connections(self) -> Mapping[str, str]:
        """Appliances with an open connection, and the host key each offered."""
        return {address: entry.host_key for address, entry in self._entries.items()
                if entry.connection is not None}

    def verdict(self, address: str) -> str:
        """`pinned` or `new`: what the host key of the last connection to `address` was."""
        entry = self._entries.get(address)
        return entry.verdict if entry else ""

    @asynccontextmanager
    async def session(
        self, address: str, command: str, *, open_within: float
    ) -> AsyncIterator[asyncssh.SSHClientProcess[bytes]]:
        """A process running `command` on `address`, on the kept connection; the channel
        slot is held until the block ends (the process is closed then)."""
        entry = self._entry(address)
        async with entry.slots:
            self._hold(entry)
            try:
                process = await self._start(address, entry, command, open_within)
                try:
                    yield process
                finally:
                    process.close()
            finally:
                self._release(address, entry)

    def discard(self, address: str) -> None:
        """Close `address`'s connection (a command timed out on it: it may be wedged)."""
        entry = self._entries.get(address)
        if entry is not None and entry.connection is not None:
            connection, entry.connection = entry.connection, None
            connection.close()

    async def aclose(self) -> None:
        connections = [e.connection for e in self._entries.values() if e.connection]
        for entry in self._entries.values():
            if entry.idle_timer is not None:
                entry.idle_timer.cancel()
            entry.connection = None
        for connection in connections:
            connection.close()
        for connection in connections:
            with suppress(Exception):
                async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                    await connection.wait_closed()

    # -- inside ------------------------------------------------------------------------------

    def _entry(self, address: str) -> _Entry:
        entry = self._entries.get(address)
        if entry is None:
            entry = self._entries[address] = _Entry(asyncio.Semaphore(self.settings.max_channels))
        return entry

    async def _start(
        self, address: str, entry: _Entry, command: str, open_within: float
    ) -> asyncssh.SSHClientProcess[bytes]:
        for last_try in (False, True):
            connection, fresh = await self._connection(address, entry)
            try:
                async with asyncio.timeout(open_within):
                    return await connection.create_process(command, encoding=None)
            except TimeoutError:
                self.discard(address)
                raise PeerUnavailable(f"appliance {address}", f"no ssh channel within "
                                      f"{open_within:g} s") from None
            except (asyncssh.Error, OSError) as exc:
                if entry.connection is connection:
                    self.discard(address)
                if fresh or last_try or not dead(exc):
                    raise channel_failure(address, exc) from None
                log.info("appliance connection dead: reopening", appliance=address,
                         error=str(exc))
        raise AssertionError("unreachable")

    async def _connection(
        self, address: str, entry: _Entry
    ) -> tuple[asyncssh.SSHClientConnection, bool]:
        """The kept connection (False), or a new one (True) when there is none alive."""
        async with entry.opening:
            connection = entry.connection
            if connection is not None and not connection.is_closed():
                return connection, False
            entry.connection = await self._open(address, entry)
            return entry.connection, True

    async def _open(self, address: str, entry: _Entry) -> asyncssh.SSHClientConnection:
        login: Login = self._login()
        key = _read_key(address, login)
        settings = self.settings
        port = settings.port
        judged = Judgement(expected=[fingerprint(k) for k in self.hostkeys.expected(address, port)])
        client = _Client(self.hostkeys, address, port, judged)
        started = time.monotonic()
        try:
            connection, _ = await asyncssh.create_connection(
                lambda: client, address, port,
                username=login.user, client_keys=[key], known_hosts=self.hostkeys.known(address),
                config=None, agent_path=None, password_auth=False, kbdint_auth=False,
                gss_auth=False, host_based_auth=False, preferred_auth="publickey",
                connect_timeout=settings.connect_timeout_seconds,
                login_timeout=settings.connect_timeout_seconds,
                keepalive_interval=KEEPALIVE_SECONDS, keepalive_count_max=3,
            )
        except Exception as exc:
            raise connect_failure(address, login.user, exc, judged, self.hostkeys,
                                  settings.connect_timeout_seconds) from None
        self.opened += 1
        appliance_connection_opened()
        offered = connection.get_server_host_key()
        entry.host_key = fingerprint(offered) if offered else ""
        entry.verdict = judged.verdict or "pinned"
        log.info("appliance connected", appliance=address, user=login.user,
                 ms=int((time.monotonic() - started) * 1000), host_key=entry.host_key,
                 host_key_verdict=entry.verdict)
        return connection

    def _hold(self, entry: _Entry) -> None:
        entry.busy += 1
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None

    def _release(self, address: str, entry: _Entry) -> None:
        entry.busy -= 1
        if entry.busy == 0 and entry.connection is not None:
            loop = asyncio.get_running_loop()
            entry.idle_timer = loop.call_later(self.settings.idle_seconds, self._idle, address)

    def _idle(self, address: str) -> None:
        entry = self._entries.get(address)
        if entry is None or entry.busy or entry.connection is None:
            return
        entry.idle_timer = None
        connection, entry.connection = entry.connection, None
        log.info("appliance connection idle: closed", appliance=address,
                 idle_seconds=self.settings.idle_seconds)
        connection.close()


def _read_key(address: str, login: Login) -> asyncssh.SSHKey:
    try:
        return asyncssh.read_private_key(login.key)
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise PeerMisconfigured(
            f"appliance {address}", f"cannot use the ssh key {login.key} of {login.user}: "
            f"{reason} (set appliances.key to an unencrypted private key)") from None
