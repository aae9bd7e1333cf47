"""A stand-in for JupyterHub's REST API (the parts wodmail uses), over real HTTP on loopback.

Answers as JupyterHub 6.1.1 does (measured; tests/e2e/test_hub_real.py runs the real one):
- `POST /hub/api/users/{name}/server`: 201; 202 when the spawn is slow (and again while it is
  pending); 400 "{name} is already running"; 400 "{name} is pending stop" while stopping.
- `DELETE` the same: 204, also for a server that is not running (`stop_not_running_status=400`
  gives JupyterHub 1.x's 400 "... is not running"); 202 when the stop is slow or pending.
- `GET /hub/api/users/{name}`: the user model, `servers` holding active (ready or pending)
  servers, shown only to a token with `read:servers`; `GET /hub/api/user`: the token's scopes;
  `GET .../server/progress`: the event that says why the last spawn failed.
- A user the hub does not have: 404 `{"status": 404, "message": null}`. An unknown token:
  403 "Missing or invalid credentials."; a token without the scope: 403 "Action is not
  authorized with current scopes; requires any of [start:servers]".

A slow start or stop (`set_slow`) stays pending until the user model has been read a given
number of times: deterministic, whatever the machine's load. `fail_spawns` makes the next
slow spawns fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wodmail.dev.standins._base import StandinRequest, StandinResponse, StandinServer

DEFAULT_SCOPES = ("servers", "read:users")

# Scopes and the scopes they include (JupyterHub 6's table, the part that matters here).
_SUBSCOPES = {
    "admin:servers": ("servers",),
    "servers": ("read:servers", "start:servers", "delete:servers"),
    "read:servers": ("read:users:name",),
    "admin:users": ("users",),
    "users": ("read:users",),
    "read:users": ("read:users:name",),
}
# What each endpoint requires (any of), in the order JupyterHub names them in its 403.
_REQUIRES = {
    "start": ("start:servers",),
    "stop": ("delete:servers",),
    "read": ("read:users", "read:users:name", "read:servers"),
}
_SERVER = re.compile(r"^/hub/api/users/([^/]+)/server(/progress)?$")
_USER = re.compile(r"^/hub/api/users/([^/]+)$")


@dataclass
class _Server:
    started: str
    pending: str | None = None  # "spawn" or "stop"
    reads_left: int = 0  # user-model reads until the pending action completes
    fails: bool = False

    @property
    def ready(self) -> bool:
        return self.pending is None


class StandinHub(StandinServer):
    """JupyterHub on 127.0.0.1; `url` is the hub's base URL (WODBEAPIURL)."""

    def __init__(
        self,
        token: str,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        users: Iterable[str] | None = None,
        stop_not_running_status: int = 204,
    ) -> None:
        super().__init__()
        if stop_not_running_status not in (204, 400):
            raise ValueError(
                f"stop_not_running_status must be 204 or 400, got {stop_not_running_status}"
            )
        self._token = token
        self._scopes = _expand(scopes)
        self._known_users = None if users is None else set(users)
        self._servers: dict[str, _Server] = {}
        self._spawn_failures: dict[str, str] = {}
        self._slow_start = self._slow_stop = 0
        self._fail_spawns = 0
        self._start_refusal: tuple[int, str] | None = None
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
            self._scopes = _expand(scopes)

    def set_slow(self, *, start: int = 0, stop: int = 0) -> None:
        """Starts (stops) answer 202 and stay pending for that many reads of the user model."""
        with self._lock:
            self._slow_start, self._slow_stop = start, stop

    def fail_spawns(self, count: int = 1) -> None:
        """The next `count` slow spawns fail when they would have become ready."""
        with self._lock:
            self._fail_spawns = count

    def refuse_starts(self, status: int, message: str) -> None:
        """Every start from now on is answered `status` with `message` (the checks before pass)."""
        with self._lock:
            self._start_refusal = (status, message)

    def add_user(self, name: str) -> None:
        """Only meaningful when the hub was built with `users=`: otherwise every name exists."""
        with self._lock:
            if self._known_users is not None:
                self._known_users.add(name)

    def is_running(self, name: str) -> bool:
        with self._lock:
            server = self._servers.get(name)
            return server is not None and server.ready

    def running_servers(self) -> set[str]:
        with self._lock:
            return {name for name, server in self._servers.items() if server.ready}

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: StandinRequest) -> StandinResponse:
        path = request.path.split("?", 1)[0]
        if path == "/hub/api/user" and request.method == "GET":
            return self._authorised(request, None) or self._whoami()
        if match := _SERVER.match(path):
            name, progress = match.group(1), match.group(2)
            if progress and request.method == "GET":
                return self._authorised(request, ("read:servers",)) or self._progress(name)
            if not progress:
                return self._server_request(request, name)
        if (match := _USER.match(path)) and request.method == "GET":
            return self._authorised(request, _REQUIRES["read"]) or self._user(match.group(1))
        return _error(404, "Not Found")

    def _server_request(self, request: StandinRequest, name: str) -> StandinResponse:
        if request.method == "POST":
            return self._authorised(request, _REQUIRES["start"]) or self._start(name)
        if request.method == "DELETE":
            return self._authorised(request, _REQUIRES["stop"]) or self._stop(name)
        return _error(405, "Method Not Allowed")

    def _authorised(
        self, request: StandinRequest, requires: tuple[str, ...] | None
    ) -> StandinResponse | None:
        """None when the request may go on, else JupyterHub's 403."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or token != self._token:
            return _error(403, "Missing or invalid credentials.")
        if requires is None or self._scopes.intersection(requires):
            return None
        return _error(
            403,
            "Action is not authorized with current scopes; requires any of "
            f"[{', '.join(requires)}]",
        )

    # -- the hub's state ---------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        return self._known_users is None or name in self._known_users

    def _start(self, name: str) -> StandinResponse:
        if not self._exists(name):
            return _not_found()
        if self._start_refusal is not None:
            return _error(*self._start_refusal)
        server = self._servers.get(name)
        if server is not None and server.pending == "spawn":
            return StandinResponse(202)
        if server is not None and server.pending == "stop":
            return _error(400, f"{name} is pending stop")
        if server is not None:
            return _error(400, f"{name} is already running")
        started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self._spawn_failures.pop(name, None)
        if not self._slow_start:
            self._servers[name] = _Server(started)
            return StandinResponse(201)
        fails = self._fail_spawns > 0
        self._fail_spawns -= fails
        self._servers[name] = _Server(started, "spawn", self._slow_start, fails)
        return StandinResponse(202)

    def _stop(self, name: str) -> StandinResponse:
        if not self._exists(name):
            return _not_found()
        server = self._servers.get(name)
        if server is None:
            if self.stop_not_running_status == 400:
                return _error(400, f"{name} is not running ")
            return StandinResponse(204)
        if server.pending == "stop":
            return StandinResponse(202)
        if not self._slow_stop:
            del self._servers[name]
            return StandinResponse(204)
        server.pending, server.reads_left = "stop", self._slow_stop
        return StandinResponse(202)

    def _advance(self, name: str) -> None:
        """One read of the user model: a pending start or stop comes one step closer to done."""
        server = self._servers.get(name)
        if server is None or server.pending is None:
            return
        server.reads_left -= 1
        if server.reads_left > 0:
            return
        if server.pending == "stop":
            del self._servers[name]
        elif server.fails:
            del self._servers[name]
            self._spawn_failures[name] = "Spawn failed: the stand-in hub was told to fail it"
        else:
            server.pending = None

    def _user(self, name: str) -> StandinResponse:
        if not self._exists(name):
            return _not_found()
        self._advance(name)
        server = self._servers.get(name)
        model: dict[str, Any] = {
            "kind": "user",
            "name": name,
            "admin": False,
            "groups": [],
            "roles": ["user"],
            "pending": server.pending if server else None,
            "server": f"/user/{name}/" if server and server.ready else None,
        }
        if "read:servers" in self._scopes:
            model["servers"] = {"": _server_model(name, server)} if server else {}
        return StandinResponse.of_json(200, model)

    def _progress(self, name: str) -> StandinResponse:
        if not self._exists(name):
            return _not_found()
        failure = self._spawn_failures.get(name)
        if failure is None:
            return _error(400, f"{name} is not starting...")
        event = {"progress": 100, "failed": True, "message": failure}
        return StandinResponse(
            200, f"data: {json.dumps(event)}\n\n".encode(), "text/event-stream"
        )

    def _whoami(self) -> StandinResponse:
        model = {"kind": "service", "name": "wodmail", "scopes": sorted(self._scopes)}
        return StandinResponse.of_json(200, model)


def _server_model(name: str, server: _Server) -> dict[str, Any]:
    return {
        "name": "",
        "ready": server.ready,
        "pending": server.pending,
        "stopped": False,
        "url": f"/user/{name}/",
        "started": server.started,
        "progress_url": f"/hub/api/users/{name}/server/progress",
    }


def _expand(scopes: Iterable[str]) -> frozenset[str]:
    expanded: set[str] = set()
    todo = list(scopes)
    while todo:
        scope = todo.pop()
        if scope not in expanded:
            expanded.add(scope)
            todo.extend(_SUBSCOPES.get(scope, ()))
    return frozenset(expanded)


def _not_found() -> StandinResponse:
    return StandinResponse.of_json(404, {"status": 404, "message": None})


def _error(status: int, message: str) -> StandinResponse:
    return StandinResponse.of_json(status, {"status": status, "message": message})
