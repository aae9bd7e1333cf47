"""A student's docker compose project on an appliance, as the stock container workshops
made one: its files in `/tmp/<name>.<N>`, the project `<name><N>`, every docker command run
as `studentN` (a member of the appliance's docker group), as `sudo su - studentN -c` did.

Compose v2 (`docker compose`) and v1 (`docker-compose`) are both found; containers are
always looked up through `compose ps`, never by a guessed name (v1 names them
`<project>_<service>_1`, v2 `<project>-<service>-1`: the stock scripts' v1 names find
nothing under v2).
"""

from __future__ import annotations

import asyncio
import base64
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping

from wodmail.appliances import Appliance, Completed
from wodmail.errors import ConfigurationError, PeerRefused
from wodmail.hooks.context import HookContext
from wodmail.host.ratio import tar_completion_ratio

BUILD_SECONDS = 900.0
# A server line of `jupyter lab list`: http://HOST:PORT/PATH?token=TOKEN :: DIR
_SERVER = re.compile(r"https?://[^\s/]*:(\d+)/\S*?[?&]token=([0-9A-Za-z_-]+)")
_WRITE = 'umask 077; cat > "$1.new" && chmod "$2" "$1.new" && mv -f "$1.new" "$1"'
_SERVICE_LABEL = '{{.Name}} {{index .Config.Labels "com.docker.compose.service"}}'


class ComposeProject:
    """The compose project `<name><N>` of `ctx.student` on the appliance."""

    def __init__(self, ctx: HookContext, name: str, app: Appliance | None = None) -> None:
        if ctx.student is None:
            raise ConfigurationError(f"{ctx.workshop}: a compose project is per student")
        self.app = app or ctx.appliance()
        self.ready_seconds = ctx.ready_seconds
        self.user = f"student{ctx.student}"
        self.project = f"{name}{ctx.student}"
        self.directory = f"/tmp/{name}.{ctx.student}"
        self._command: tuple[str, ...] | None = None

    async def compose_command(self) -> tuple[str, ...]:
        """`docker compose` when the v2 plugin answers, else `docker-compose` (v1)."""
        if self._command is None:
            for candidate in (("docker", "compose"), ("docker-compose",)):
                found = await self._as_student(*candidate, "version", check=False)
                if found.status == 0:
                    self._command = candidate
                    break
            else:
                raise ConfigurationError(
                    f"appliance {self.app.address}: neither `docker compose` (v2) nor "
                    f"`docker-compose` (v1) runs for {self.user}"
                )
        return self._command

    async def write(self, files: Mapping[str, str], *, executable: tuple[str, ...] = (),
                    private: tuple[str, ...] = ()) -> None:
        """The project's files (Dockerfile, docker-compose.yml ...), written as the student
        into the project folder, each replaced whole: 0644, 0755 for `executable`, 0600 for
        `private` (an env file holding a password)."""
        await self._as_student("mkdir", "-p", "-m", "0755", self.directory)
        for name, text in files.items():
            if "/" in name or name in (".", ".."):
                raise ValueError(f"compose project file {name!r}: a plain file name is expected")
            mode = "0755" if name in executable else "0600" if name in private else "0644"
            path = f"{self.directory}/{name}"
            await self._as_student(
                "sh", "-c", _WRITE, "write", path, mode, input=text,
            )

    async def build(self, image: str, *, within: float = BUILD_SECONDS) -> None:
        """`docker build --force-rm -t image` of the project folder: what `compose up
        --build` did, but a failed build leaves no intermediate container behind (the
        classic builder keeps them), with either compose version."""
        await self._as_student("sh", "-c", 'cd "$1" && docker build --force-rm -q -t "$2" .',
                               "build", self.directory, image, limit=within)

    async def up(self, *, within: float = BUILD_SECONDS) -> None:
        """`compose up -d` in the project folder (images built with `build` first)."""
        await self._compose("up", "-d", limit=within)

    async def containers(self) -> dict[str, str]:
        """{service: container name} of the project's containers, from `compose ps -q`."""
        every = ("--all",) if await self._v2() else ()  # v1 lists stopped ones anyway
        listed = await self._compose("ps", "-q", *every)
        ids = sorted(set(listed.stdout.split()))
        if not ids:
            return {}
        shown = await self._as_student("docker", "inspect", "--format", _SERVICE_LABEL, *ids)
        found: dict[str, str] = {}
        for line in shown.stdout.splitlines():
            name, _, service = line.strip().lstrip("/").partition(" ")
            if service:
                found[service] = name
        return found

    async def container(self, service: str) -> str:
        """The name of `service`'s container; PeerRefused naming the appliance when absent."""
        name = (await self.containers()).get(service)
        if name is None:
            raise PeerRefused(f"appliance {self.app.address}", f"project {self.project} has no "
                              f"container for service {service} (did `compose up` fail?)")
        return name

    async def exec(self, service: str, *argv: str, user: str | None = None,
                   input: str | None = None, within: float | None = None,
                   check: bool = True) -> Completed:
        """Run argv in `service`'s container (`docker exec [-i] [-u user]`)."""
        name = await self.container(service)
        options = (["-i"] if input is not None else []) + (["-u", user] if user else [])
        return await self._as_student("docker", "exec", *options, name, *argv, input=input,
                                       limit=within, check=check)

    async def wait_port(self, port: int, *, within: float | None = None) -> None:
        """Until something accepts connections on the appliance's `port`; PeerRefused naming
        the appliance, the project and the port after `within` seconds (default:
        `appliances.ready_seconds`)."""
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{int(port)}"
        await self._until(
            lambda: self._ready(probe), within or self.ready_seconds,
            lambda: f"port {port} of project {self.project} never answered",
        )

    async def jupyter_token(self, service: str, port: int, *,
                            within: float | None = None) -> str:
        """The token of the Jupyter server listening on `port` in `service`'s container,
        from `jupyter lab list` (what the stock entrypoint wrote to a file for the create
        script to fetch). A server on another port (Jupyter moves on when its port is
        taken) is not the one the notebooks will reach: it does not count."""
        found: list[str] = []
        seen: set[int] = set()

        async def listed() -> bool:
            done = await self.exec(service, "jupyter", "lab", "list", check=False, within=30)
            for listed_port, token in _SERVER.findall(done.stdout):
                seen.add(int(listed_port))
                if int(listed_port) == port:
                    found.append(token)
            return bool(found)

        def failure() -> str:
            elsewhere = f" (one listens on {sorted(seen)} instead)" if seen else ""
            return (f"no Jupyter server with a token on port {port} in {service} of project "
                    f"{self.project}{elsewhere}")

        await self._until(listed, within or self.ready_seconds, failure)
        return found[0]

    async def set_password(self, service: str, password: str) -> None:
        """The student's own password for their account in the container (`chpasswd` as
        root in it, the password on stdin): no hash is baked into the image."""
        await self.exec(service, "chpasswd", user="root", input=f"{self.user}:{password}\n")

    async def completion(self, service: str, folder: str = ".") -> int:
        """The completion ratio of the notebooks in `service`'s container (its working
        folder by default), read from a tar stream: nothing is extracted anywhere."""
        name = await self.container(service)
        # base64: the stream crosses the channel as text.
        pipeline = (f"set -o pipefail; docker exec {shlex.quote(name)} tar cf - -C "
                    f"{shlex.quote(folder)} . | base64 -w0")
        done = await self._as_student("bash", "-c", pipeline)
        return tar_completion_ratio(base64.b64decode(done.stdout))

    async def down(self, *, images: tuple[str, ...] = ()) -> None:
        """Remove the project: `compose down` from its folder, then any container still
        labelled with the project (a v1/v2 switch, a lost folder), the `images` built for it,
        then the folder. Nothing there is fine: it is what a re-run after a failure finds."""
        if (await self._as_student("test", "-d", self.directory, check=False)).status == 0:
            await self._compose("down", "--remove-orphans", check=False)
        left = await self._as_student(
            "docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}")
        if left.stdout.split():
            await self._as_student("docker", "rm", "-f", *left.stdout.split())
        for image in images:
            await self._as_student("docker", "rmi", "-f", image, check=False)
        await self._as_student("rm", "-rf", "--", self.directory)

    async def _v2(self) -> bool:
        return await self.compose_command() == ("docker", "compose")

    async def _compose(self, *args: str, limit: float | None = None,
                       check: bool = True) -> Completed:
        command = await self.compose_command()
        return await self._as_student(
            "sh", "-c", 'cd "$1" && shift && exec "$@"', "compose", self.directory,
            *command, "-p", self.project, *args, limit=limit, check=check,
        )

    async def _ready(self, probe: str) -> bool:
        return (await self._as_student("bash", "-c", probe, check=False, limit=10)).status == 0

    async def _until(self, condition: Callable[[], Awaitable[bool]], within: float,
                     failure: Callable[[], str]) -> None:
        deadline = time.monotonic() + within
        pause = 0.1
        while not await condition():
            if time.monotonic() >= deadline:
                raise PeerRefused(f"appliance {self.app.address}",
                                  f"{failure()} within {within:g} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _as_student(self, *argv: str, input: str | None = None,
                          limit: float | None = None, check: bool = True) -> Completed:
        return await self.app.run(*argv, user=self.user, input=input, timeout=limit,
                                  check=check)
