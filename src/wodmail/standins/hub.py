"""A stand-in for JupyterHub's REST API (the parts wodmail uses), over real HTTP on loopback.

Mirrors JupyterHub: `POST /hub/api/users/{name}/server` answers 201, or 400 "... is already
running"; `DELETE` answers 204, or for a server that is not running 400 "... is not running"
as JupyterHub 1.x does (`stop_not_running_status` picks 204 as in 2.x-4.x or 404 as in 5.x);
a wrong token or a token without the needed scope gets 403 with JupyterHub's message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from wodmail.standins._base import StandinRequest, StandinResponse, StandinServer

DEFAULT_SCOPES = ("servers", "read:users")

# Each action and the scopes (any of) that allow it, as JupyterHub names them.
_ALLOWED_BY = {
    "start": ("start:servers", "servers"),
    "stop": ("delete:servers", "servers"),
    "read": ("read:users", "users", "admin:users"),
}
_SERVER = re.compile(r"^/hub/api/users/([^/]+)/server$")
_USER = re.compile(r"^/hub/api/users/([^/]+)$")


class StandinHub(StandinServer):
    """JupyterHub on 127.0.0.1; `url` is the hub's base URL (WODBEAPIURL)."""

    def __init__(
        self,
        token: str,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        users: Iterable[str] | None = None,
        stop_not_running_status: int = 400,
    ) -> None:
        super().__init__()
        if stop_not_running_status not in (204, 400, 404):
            raise ValueError(
                f"stop_not_running_status must be 204, 400 or 404, got {stop_not_running_status}"
            )
        self._token = token
        self._scopes = frozenset(scopes)
        self._known_users = None if users is None else set(users)
        self._started: dict[str, str] = {}
        self.stop_not_running_status = stop_not_running_status

    @property
    def url(self) -> str:
        return self.root_url

    @property
    def token(self) -> str:
        return self._token

    def set_scopes(self, *scopes: str) -> None:
        """Replace the token's scopes (none at all: every call gets 403)."""
        with self._lock:
            self._scopes = frozenset(scopes)

    def add_user(self, name: str) -> None:
        """Only meaningful when the hub was built with `users=`: otherwise every name exists."""
        with self._lock:
            if self._known_users is not None:
                self._known_users.add(name)

    def is_running(self, name: str) -> bool:
        with self._lock:
            return name in self._started

    def running_servers(self) -> set[str]:
        with self._lock:
            return set(self._started)

    def _route(self, request: StandinRequest) -> StandinResponse:
        path = request.path.split("?", 1)[0]
        if match := _SERVER.match(path):
            return self._server_request(request, match.group(1))
        if (match := _USER.match(path)) and request.method == "GET":
            return self._authorised(request, "read") or self._user(match.group(1))
        return _error(404, "Not Found")

    def _server_request(self, request: StandinRequest, name: str) -> StandinResponse:
        if request.method == "POST":
            return self._authorised(request, "start") or self._start(name)
        if request.method == "DELETE":
            return self._authorised(request, "stop") or self._stop(name)
        return _error(405, "Method Not Allowed")

    def _authorised(self, request: StandinRequest, action: str) -> StandinResponse | None:
        """None when the request may go on, else JupyterHub's 403."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        allowed_by = _ALLOWED_BY[action]
        valid = scheme.lower() in ("token", "bearer") and token == self._token
        if valid and self._scopes.intersection(allowed_by):
            return None
        return _error(
            403,
            "Action is not authorized with current scopes; requires any of "
            f"[{', '.join(allowed_by)}]",
        )

    def _exists(self, name: str) -> bool:
        return self._known_users is None or name in self._known_users

    def _start(self, name: str) -> StandinResponse:
        if not self._exists(name):
            return _error(404, "Not Found")
        if name in self._started:
            return _error(400, f"{name} is already running")
        self._started[name] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return StandinResponse(201)

    def _stop(self, name: str) -> StandinResponse:
        if not self._exists(name):
            return _error(404, "Not Found")
        if name in self._started:
            del self._started[name]
            return StandinResponse(204)
        if self.stop_not_running_status == 400:
            return _error(400, f"{name} is not running ")
        if self.stop_not_running_status == 404:
            return _error(404, "Not Found")
        return StandinResponse(204)

    def _user(self, name: str) -> StandinResponse:
        if not self._exists(name):
            return _error(404, "Not Found")
        started = self._started.get(name)
        servers: dict[str, Any] = {}
        if started is not None:
            servers[""] = {
                "name": "",
                "ready": True,
                "pending": None,
                "url": f"/user/{name}/",
                "started": started,
            }
        model = {
            "kind": "user",
            "name": name,
            "admin": False,
            "groups": [],
            "roles": ["user"],
            "pending": None,
            "server": f"/user/{name}/" if started is not None else None,
            "servers": servers,
        }
        return StandinResponse.of_json(200, model)


def _error(status: int, message: str) -> StandinResponse:
    return StandinResponse.of_json(status, {"status": status, "message": message})
