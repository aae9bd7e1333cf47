"""Client for JupyterHub's REST API: start and stop a student's server, read a user.

Idempotent on purpose: starting a server that is already running, or stopping one that
is not, is success (JupyterHub answers those with 400 or, for stop, 404 or 204 depending
on its version). A 403 means the token lacks a scope: `PeerMisconfigured`, naming the
scope; 5xx and transport failures are `PeerUnavailable`.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import httpx

from wodmail._http import ClientBase, describe_body, send
from wodmail.errors import ConfigurationError, PeerMisconfigured, PeerRefused, PeerUnavailable
from wodmail.logs import register_secret

PEER = "JupyterHub"

StartOutcome = Literal["started", "pending", "already running"]
StopOutcome = Literal["stopped", "pending", "not running"]

# The scope a wodmail token needs for each call (JupyterHub >= 2 names).
SCOPE_TO_START = "servers"
SCOPE_TO_STOP = "servers"
SCOPE_TO_READ = "read:users"


class HubClient(ClientBase):
    """The JupyterHub at `base_url` (WODBEAPIURL), authenticated by `token` (WODBETOKEN)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"JupyterHub URL must start with http:// or https://, got {base_url!r}"
            )
        if not token:
            raise ConfigurationError("JupyterHub token is empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        register_secret(token, permanent=True)
        self._base_url = base_url.rstrip("/").removesuffix("/hub/api")
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=timeout,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
        )

    async def start_server(self, user: str) -> StartOutcome:
        """Start `user`'s default server; a server already running counts as started."""
        path = _user_path(user) + "/server"
        response = await self._send("POST", path, json_body={})
        status = response.status_code
        if status == 201:
            return "started"
        if status == 202:
            return "pending"
        if status == 400:
            said = describe_body(response)
            if "pending stop" in said:
                raise PeerUnavailable(
                    PEER, f"{user}'s server is still stopping ({said})", status=status
                )
            return "already running"
        raise self._error("POST", path, response, scope=SCOPE_TO_START, action="start servers")

    async def stop_server(self, user: str) -> StopOutcome:
        """Stop `user`'s default server; a server (or user) the hub has not running is fine."""
        path = _user_path(user) + "/server"
        response = await self._send("DELETE", path)
        status = response.status_code
        if status == 204:
            return "stopped"
        if status == 202:
            return "pending"
        if status == 404:
            return "not running"
        said = describe_body(response)
        if status == 400 and "not running" in said:
            if "pending" in said:
                raise PeerUnavailable(
                    PEER, f"{user}'s server is between states ({said})", status=status
                )
            return "not running"
        raise self._error("DELETE", path, response, scope=SCOPE_TO_STOP, action="stop servers")

    async def get_user(self, user: str) -> dict[str, Any]:
        """The hub's user model (with `servers`) for `user`."""
        path = _user_path(user)
        response = await self._send("GET", path)
        if response.status_code == 404:
            raise PeerRefused(PEER, f"JupyterHub has no user {user!r}", status=404)
        if response.status_code != 200:
            raise self._error("GET", path, response, scope=SCOPE_TO_READ, action="read users")
        try:
            model = response.json()
        except ValueError:
            model = None
        if not isinstance(model, dict):
            raise PeerUnavailable(
                PEER, f"GET {path} answered 200 without a user model: {describe_body(response)}"
            )
        return model

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
        self, method: str, path: str, response: httpx.Response, *, scope: str, action: str
    ) -> PeerUnavailable | PeerRefused:
        status = response.status_code
        said = describe_body(response)
        where = f"{method} {path}"
        if status >= 500 or status in (408, 429):
            return PeerUnavailable(PEER, f"{where} failed ({status}: {said})", status=status)
        if status == 403:
            return PeerMisconfigured(
                PEER,
                f"{where} refused (403: {said}): wodmail's token may not {action}; "
                f"it needs the {scope!r} scope (check the token and its role in the hub's "
                "configuration)",
                status=status,
            )
        if status == 401:
            return PeerMisconfigured(
                PEER,
                f"{where} refused (401: {said}): the hub does not know wodmail's token",
                status=status,
            )
        return PeerRefused(PEER, f"{where} refused ({status}: {said})", status=status)


def _user_path(user: str) -> str:
    if not user or "/" in user:
        raise ValueError(f"not a JupyterHub user name: {user!r}")
    return f"/hub/api/users/{quote(user, safe='')}"
