"""Client for JupyterHub's REST API (JupyterHub 4-6): start and stop a student's server.

What the real hub answers, and what wodmail makes of it:
- start: 201 started; 400 "... is already running" is success; 202 means the spawn is still
  pending (the hub answers 202 only after its own `slow_spawn_timeout`, 10 s by default), so
  the user model is polled until the server is ready or has failed; 400 "... is pending stop"
  waits for the stop to end, then starts.
- stop: the hub answers 204 even for a server that never ran, so the user model is read
  first: no active server is `not running`. 202 (stop pending) is polled until it is gone.
- 404 on a user: the hub has no such user. 403 "Missing or invalid credentials.": the token
  is not the hub's; 403 "... requires any of [start:servers]": the token lacks that scope.
  Both 403s are `PeerMisconfigured`. 5xx and transport failures are `PeerUnavailable`.
- A call that times out is not simply retried: the hub may be spawning slower than our
  timeout, so the user model says whether there is a start (or stop) to follow instead.
Following a pending start or stop lasts at most `within` seconds (the order's deadline);
between polls the caller's `pause` runs, so a waiting order can give its worker slot back.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
import structlog

from wodmail.errors import PeerMisconfigured, PeerRefused, PeerUnavailable
from wodmail.peers._http import ClientBase, describe_body, send

log = structlog.get_logger(__name__)

PEER = "JupyterHub"

StartOutcome = Literal["started", "already running"]
StopOutcome = Literal["stopped", "not running", "no such hub user"]
Pause = Callable[[float], Awaitable[None]]

# Longer than the hub's own slow_spawn_timeout / slow_stop_timeout (10 s by default), after
# which it answers 202: a slow spawn then costs one call, not a client timeout and a retry.
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_FOLLOW_SECONDS = 300.0
POLL_SECONDS = 1.0
PROGRESS_SECONDS = 5.0
TOKEN_CHECK_SECONDS = 60.0  # a token's scopes change when an admin edits the hub's config

# What a start needs, by the scope names of JupyterHub 6 (start:servers) and 2-5 (servers).
_NEEDED_SCOPES = {
    "start servers": ("start:servers", "servers", "admin:servers"),
    "read servers": ("read:servers", "servers", "admin:servers"),
}
_INVALID_TOKEN = "Missing or invalid credentials"
_REQUIRED_SCOPES = re.compile(r"requires any of \[([^\]]*)\]")


class HubClient(ClientBase):
    """The JupyterHub at `base_url` (WODBEAPIURL), authenticated by `token` (WODBETOKEN)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        super().__init__(
            "JupyterHub", base_url, credential=token, credential_name="token", secret=token,
            timeout=timeout, positive={"poll_seconds": poll_seconds},
            headers={"Authorization": f"token {token}"},
        )
        self._poll_seconds = poll_seconds
        self._token_good_until = 0.0

    def _root(self, base_url: str) -> str:
        """Without `/hub/api` too: WODBEAPIURL may end with it, and the paths carry it."""
        return super()._root(base_url).removesuffix("/hub/api")

    # -- the calls the lifecycle makes -------------------------------------------------------

    async def start_server(
        self, user: str, *, within: float = DEFAULT_FOLLOW_SECONDS, pause: Pause = asyncio.sleep
    ) -> StartOutcome:
        """Start `user`'s default server and wait until it is ready (at most `within` s)."""
        until = _Until.after(within, pause)
        path = _user_path(user) + "/server"
        while True:
            try:
                response = await self._send("POST", path, json_body={})
            except PeerUnavailable as exc:
                # Timed out: the hub may have the POST and be spawning slower than our timeout.
                if not _timed_out(exc) or await self._server(user) is None:
                    raise
                await self._until_ready(user, until)
                return "started"
            status, said = response.status_code, describe_body(response)
            if status == 201:
                return "started"
            if status == 202:
                await self._until_ready(user, until)
                return "started"
            if status == 400 and "already running" in said:
                return "already running"
            if status == 400 and "pending stop" in said:
                await self._pause(user, until, "still stopping (pending stop)")
                await self._until_stopped(user, until)
                continue
            if status >= 500:
                raise PeerUnavailable(
                    PEER,
                    f"POST {path} failed ({status}: {said}): {user}'s server did not start; "
                    f"{await self.spawn_failure(user)}",
                    status=status,
                )
            raise self._error("POST", path, response, user=user, action="start servers")

    async def stop_server(
        self, user: str, *, within: float = DEFAULT_FOLLOW_SECONDS, pause: Pause = asyncio.sleep
    ) -> StopOutcome:
        """Stop `user`'s default server, waiting until it is gone (at most `within` s).

        `not running` when the hub shows no active server (it would answer 204 all the same);
        `no such hub user` when the hub does not know the user: nothing can run for it.
        """
        try:
            if await self._server(user) is None:
                return "not running"
        except PeerRefused as exc:
            if exc.status != 404:
                raise
            log.warning("hub stop: no such user on the hub", user=user, error=str(exc))
            return "no such hub user"
        until = _Until.after(within, pause)
        path = _user_path(user) + "/server"
        try:
            response = await self._send("DELETE", path)
        except PeerUnavailable as exc:
            if not _timed_out(exc):
                raise
            await self._until_stopped(user, until)  # the hub may be stopping slower than us
            return "stopped"
        status, said = response.status_code, describe_body(response)
        if status == 204:
            return "stopped"
        if status == 202:
            await self._until_stopped(user, until)
            return "stopped"
        if status == 400 and "not running" in said:  # JupyterHub 1.x
            return "not running"
        raise self._error("DELETE", path, response, user=user, action="stop servers")

    async def preflight(self, user: str) -> None:
        """What a start needs, checked before anything is changed: the hub accepts the token,
        the token may start and read servers (known good for TOKEN_CHECK_SECONDS once seen),
        and the hub has `user`."""
        if time.monotonic() >= self._token_good_until:
            await self._check_token(user)
            self._token_good_until = time.monotonic() + TOKEN_CHECK_SECONDS
        await self.get_user(user)

    async def check_token(self) -> None:
        """The hub accepts the token and lets it start, stop and read servers
        (`wodmail check-config`); `PeerMisconfigured` naming what is missing otherwise."""
        await self._check_token("")

    async def _check_token(self, user: str) -> None:
        response = await self._send("GET", "/hub/api/user")
        if response.status_code in (401, 403):  # any token the hub knows may identify itself
            raise _bad_token("GET /hub/api/user", response)
        if response.status_code == 404:
            raise PeerMisconfigured(
                PEER,
                f"GET /hub/api/user answered 404 ({describe_body(response)}): {self._base_url} "
                "does not look like a JupyterHub (hub.url is WODBEAPIURL, the hub's base URL)",
                status=404,
            )
        if response.status_code != 200:
            raise self._error("GET", "/hub/api/user", response, user=user, action="identify")
        try:
            scopes = response.json().get("scopes")
        except (ValueError, AttributeError):
            scopes = None
        if not isinstance(scopes, list):  # JupyterHub >= 2 lists the token's expanded scopes
            return
        held = {str(scope).split("!", 1)[0] for scope in scopes}
        for action, needed in _NEEDED_SCOPES.items():
            if not held.intersection(needed):
                raise PeerMisconfigured(
                    PEER,
                    f"wodmail's token may not {action}: it needs any of the scopes "
                    f"[{', '.join(needed)}] and the hub gives it [{', '.join(sorted(held))}]",
                )

    async def get_user(self, user: str) -> dict[str, Any]:
        """The hub's user model for `user`; `PeerRefused` naming the user when it has none."""
        path = _user_path(user)
        response = await self._send("GET", path)
        if response.status_code != 200:
            raise self._error("GET", path, response, user=user, action="read users")
        try:
            model = response.json()
        except ValueError:
            model = None
        if not isinstance(model, dict):
            raise PeerUnavailable(
                PEER, f"GET {path} answered 200 without a user model: {describe_body(response)}"
            )
        return model

    async def spawn_failure(self, user: str) -> str:
        """Why `user`'s last spawn failed, as the hub's progress stream tells it (best effort)."""
        path = _user_path(user) + "/server/progress"
        try:
            # An event stream: it ends at once for a failed spawn, but would last as long as
            # a spawn someone started meanwhile.
            async with asyncio.timeout(PROGRESS_SECONDS):
                response = await self._send("GET", path)
        except (PeerUnavailable, TimeoutError):
            return "the hub's log says why"
        for line in response.text.splitlines():
            if line.startswith("data:"):
                try:
                    event = json.loads(line.removeprefix("data:"))
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("failed") and event.get("message"):
                    return f"the hub says: {event['message']}"
        return "the hub's log says why"

    # -- reading the user model --------------------------------------------------------------

    async def _server(self, user: str) -> dict[str, Any] | None:
        """`user`'s default server as the hub shows it while active, else None."""
        model = await self.get_user(user)
        servers = model.get("servers")
        if not isinstance(servers, dict):
            raise PeerMisconfigured(
                PEER,
                f"the hub shows {user} without its servers: wodmail's token needs the "
                "read:servers scope (part of `servers` and `admin:servers`)",
            )
        server = servers.get("")
        return server if isinstance(server, dict) else None

    async def _until_ready(self, user: str, until: _Until) -> None:
        """Polls until the server is ready; `PeerUnavailable` if it failed or is still pending."""
        while True:
            server = await self._server(user)
            if server is not None and server.get("ready"):
                return
            if server is None:
                why = await self.spawn_failure(user)
                raise PeerUnavailable(PEER, f"{user}'s server failed to start; {why}")
            if server.get("pending") == "stop":
                raise PeerUnavailable(PEER, f"{user}'s server is being stopped while starting")
            await self._pause(user, until, f"still starting (pending {server.get('pending')})")

    async def _until_stopped(self, user: str, until: _Until) -> None:
        """Polls until the server is no longer stopping; `PeerUnavailable` past the deadline."""
        while True:
            server = await self._server(user)
            if server is None or server.get("pending") != "stop":
                return
            await self._pause(user, until, "still stopping (pending stop)")

    async def _pause(self, user: str, until: _Until, state: str) -> None:
        remaining = until.deadline - time.monotonic()
        if remaining <= 0:
            raise PeerUnavailable(PEER, f"{user}'s server is {state} after {until.within:g} s")
        await until.pause(min(self._poll_seconds, remaining))

    # -- plumbing ----------------------------------------------------------------------------

    async def _send(self, method: str, path: str, json_body: Any = None) -> httpx.Response:
        return await send(
            self._http,
            peer=PEER,
            event="hub call",
            method=method,
            path=path,
            json_body=json_body,
        )

    def _error(
        self, method: str, path: str, response: httpx.Response, *, user: str, action: str
    ) -> PeerUnavailable | PeerRefused:
        status = response.status_code
        said = describe_body(response)
        where = f"{method} {path}"
        if status >= 500 or status in (408, 429):
            return PeerUnavailable(PEER, f"{where} failed ({status}: {said})", status=status)
        if status == 401 or (status == 403 and _INVALID_TOKEN in said):
            return _bad_token(where, response)
        if status == 403:
            scopes = _REQUIRED_SCOPES.search(said)
            needs = f"any of the scopes [{scopes.group(1)}]" if scopes else "a scope it lacks"
            return PeerMisconfigured(
                PEER,
                f"{where} refused (403: {said}): wodmail's token may not {action}; it needs "
                f"{needs} (grant its role `servers` or `admin:servers` in the hub's config)",
                status=status,
            )
        if status == 404:
            detail = "" if said.startswith("{") else f", {said}"
            return PeerRefused(
                PEER,
                f"no user {user!r} ({where} answered 404{detail}): "
                "every student wodmail serves must be a user of the hub",
                status=status,
            )
        return PeerRefused(PEER, f"{where} refused ({status}: {said})", status=status)


@dataclass(frozen=True)
class _Until:
    """How long, and how, to follow a pending start or stop."""

    deadline: float
    within: float
    pause: Pause

    @classmethod
    def after(cls, within: float, pause: Pause) -> _Until:
        return cls(time.monotonic() + within, within, pause)


def _bad_token(where: str, response: httpx.Response) -> PeerMisconfigured:
    status = response.status_code
    return PeerMisconfigured(
        PEER,
        f"{where} refused ({status}: {describe_body(response)}): the hub does not accept "
        "wodmail's token (hub.token must be an api_token the hub knows, e.g. WODBETOKEN)",
        status=status,
    )


def _timed_out(exc: PeerUnavailable) -> bool:
    return isinstance(exc.__cause__, httpx.TimeoutException)


def _user_path(user: str) -> str:
    if not user or "/" in user:
        raise ValueError(f"not a JupyterHub user name: {user!r}")
    return f"/hub/api/users/{quote(user, safe='')}"
