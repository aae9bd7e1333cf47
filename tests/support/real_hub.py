"""A real JupyterHub (from PyPI) for tests, in its own process on free loopback ports.

Two parts of a production hub are replaced, because neither is what wodmail talks to:
- the proxy (configurable-http-proxy, an npm package) by `RoutesInMemory`, which keeps the
  routes the hub asks for in a dict: wodmail calls the hub's REST API on the hub's own port
  and never goes through the proxy, so routing is not under test;
- the spawner by `GatedSpawner`, whose "single-user server" is a tiny HTTP server inside the
  hub's process (the hub checks it answers, like a real one). Its start and stop can be held
  by the test (a file `hold-start-<user>` / `hold-stop-<user>` in the control dir) to make a
  spawn or a stop as slow as the test needs, without timing windows, or made to fail
  (`fail-start-<user>`). Every start and stop is appended to `events` in the control dir.

The hub process imports this module by name (`real_hub.GatedSpawner`), so it must not
import pytest; the test module owns the fixture and skips when jupyterhub is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from jupyterhub.proxy import Proxy
from jupyterhub.spawner import Spawner
from traitlets import Bool, Unicode

from wodmail.dev.processes import stop_process

START_TIMEOUT = 90.0  # a hub starts in 2-5 s; generous for a loaded 2-core machine
HOLD_POLL_SECONDS = 0.05


class RoutesInMemory(Proxy):
    """A proxy that routes nothing: the hub's route table, kept in memory."""

    should_start = Bool(False)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._routes: dict[str, dict[str, object]] = {}

    async def add_route(self, routespec: str, target: str, data: dict[str, object]) -> None:
        self._routes[routespec] = {"routespec": routespec, "target": target, "data": data}

    async def delete_route(self, routespec: str) -> None:
        self._routes.pop(routespec, None)

    async def get_all_routes(self) -> dict[str, dict[str, object]]:
        return dict(self._routes)


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


class GatedSpawner(Spawner):
    """A single-user "server" that is an HTTP responder in the hub's own event loop."""

    control_dir = Unicode(config=True, help="where the test's hold/fail files and events are")

    _responder: asyncio.Server | None = None

    def _control(self, name: str) -> Path:
        return Path(self.control_dir) / f"{name}-{self.user.name}"

    def _event(self, what: str) -> None:
        with open(Path(self.control_dir) / "events", "a", encoding="utf-8") as events:
            events.write(f"{what} {self.user.name}\n")

    async def _wait_while_held(self, what: str) -> None:
        # The hold is a file the test process removes: polling is the simple way to see it.
        while self._control(f"hold-{what}").exists():  # noqa: ASYNC110
            await asyncio.sleep(HOLD_POLL_SECONDS)

    async def start(self) -> str:
        self._event("start")
        await self._wait_while_held("start")
        if self._control("fail-start").exists():
            raise RuntimeError(f"the test made {self.user.name}'s spawn fail")
        self._responder = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
        port = self._responder.sockets[0].getsockname()[1]
        self._event("started")
        return f"http://127.0.0.1:{port}"

    async def stop(self, now: bool = False) -> None:
        self._event("stop")
        await self._wait_while_held("stop")
        responder, self._responder = self._responder, None
        if responder is not None:
            responder.close()
        self._event("stopped")

    async def poll(self) -> int | None:
        responder = self._responder
        return None if responder is not None and responder.is_serving() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RealHub:
    """A running JupyterHub: `url` is what wodmail's `hub.url` would be."""

    url: str
    tokens: dict[str, str]
    control: Path
    log_file: Path
    users: list[str]
    slow_seconds: float | None  # None: the hub's own default (10 s)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def hold(self, what: str, user: str) -> None:
        """Make `user`'s next start or stop (`what`) wait until `release`."""
        (self.control / f"hold-{what}-{user}").touch()

    def release(self, what: str, user: str) -> None:
        (self.control / f"hold-{what}-{user}").unlink(missing_ok=True)

    def fail_starts(self, user: str, fail: bool = True) -> None:
        path = self.control / f"fail-start-{user}"
        if fail:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def events(self, user: str) -> list[str]:
        """What the spawner did for `user`: `start`, `started`, `stop`, `stopped`, in order."""
        path = self.control / "events"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [what for what, _, name in (line.partition(" ") for line in lines) if name == user]

    def api(self, method: str, path: str, token: str | None = None) -> tuple[int, str]:
        """One raw call to the hub's REST API (a test acting as another client of the hub)."""
        request = urllib.request.Request(
            f"{self.url}/hub/api/{path}",
            method=method,
            headers={"Authorization": f"token {token or self.tokens['wodmail']}"},
            data=b"{}" if method == "POST" else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, grace=10)


def _config(work: Path, api_port: int, hub: RealHub) -> str:
    services = [{"name": name, "api_token": token} for name, token in hub.tokens.items()]
    roles = [
        # As a WoD backend's installer sets it up (wod-backend install_backend.yml, reduced).
        {"name": "wodmail", "scopes": ["admin:users", "admin:servers"], "services": ["wodmail"]},
        # May read users and their servers, but not start or stop them.
        {"name": "reader", "scopes": ["read:users", "read:servers"], "services": ["reader"]},
    ]
    settings = (
        {} if hub.slow_seconds is None
        else {"slow_spawn_timeout": hub.slow_seconds, "slow_stop_timeout": hub.slow_seconds}
    )
    return f"""
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{free_port()}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{api_port}"
c.JupyterHub.proxy_class = "real_hub.RoutesInMemory"
c.JupyterHub.spawner_class = "real_hub.GatedSpawner"
c.GatedSpawner.control_dir = {str(hub.control)!r}
c.JupyterHub.authenticator_class = "null"
c.Authenticator.allowed_users = set({json.dumps(hub.users)})
c.JupyterHub.db_url = "sqlite:///{work / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(work / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(work / "jupyterhub.pid")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.tornado_settings = {json.dumps(settings)}
c.JupyterHub.services = {json.dumps(services)}
c.JupyterHub.load_roles = {json.dumps(roles)}
"""


def start_hub(work: Path, *, users: list[str], slow_seconds: float | None) -> RealHub:
    """Start JupyterHub in `work`; its slow_spawn/stop_timeout set to `slow_seconds`."""
    control = work / "control"
    control.mkdir(parents=True)
    api_port = free_port()
    hub = RealHub(
        url=f"http://127.0.0.1:{api_port}",
        tokens={"wodmail": "wodmail-" + os.urandom(16).hex(), "reader": os.urandom(16).hex()},
        control=control,
        log_file=work / "jupyterhub.log",
        users=users,
        slow_seconds=slow_seconds,
    )
    config = work / "jupyterhub_config.py"
    config.write_text(_config(work, api_port, hub), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                      env.get("PYTHONPATH")]))
    with open(hub.log_file, "wb") as log:
        hub.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_up(hub)
    except BaseException:
        hub.stop()
        raise
    return hub


def _wait_up(hub: RealHub) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    assert hub.process is not None
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            raise RuntimeError(
                f"jupyterhub exited ({hub.process.returncode}):\n"
                + hub.log_file.read_text(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(f"{hub.url}/hub/api/", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"jupyterhub did not answer on {hub.url} within {START_TIMEOUT:g} s")
