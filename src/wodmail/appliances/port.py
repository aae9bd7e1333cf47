"""`Appliance`: what a workshop hook does on its appliance, over the pool's kept connection.

Every call is one ssh channel running one command line built here with shlex quoting (the
remote account's shell reads it), and one record `appliance <address>: <command>` with its
time, outcome and output (stdout then stderr, the last 64 KiB, secrets masked), handed to
`record` (the order's hook runs). Secrets go through stdin (`input`), never the command
line: argv is visible to every user of the appliance (`ps`).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import asyncssh
import structlog
from pydantic import BaseModel, ConfigDict

from wodmail.appliances._failures import channel_failure, peer
from wodmail.appliances.connections import AppliancePool
from wodmail.errors import ApplianceCommandFailed, PeerMisconfigured, PeerUnavailable
from wodmail.logs import scrub_text

OUTPUT_CAP = 64 * 1024
"""What a record keeps of a command's output, and of its stderr."""
RUN_STDOUT_CAP = 8 * 1024 * 1024
READ_CAP = 16 * 1024 * 1024
TAR_CAP = 256 * 1024 * 1024
_CHUNK = 64 * 1024
_LABEL_CHARS = 100
# What sudo says when it will not run a command without a password or at all (`sudo -n`).
_SUDO_REFUSALS = ("a password is required", "is not in the sudoers file", "is not allowed to "
                  "execute", "may not run sudo", "a terminal is required", "must have a tty")

# A file replaced at once: a temp file made by mktemp in the target's folder (mode 0600,
# never an existing file), filled from stdin, given its mode and owner, renamed over it.
_WRITE_SCRIPT = """set -eu
tmp=$(mktemp -- "$(dirname -- "$1")/.$(basename -- "$1").wodmail.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod -- "$2" "$tmp"
if [ -n "$3" ]; then chown -- "$3" "$tmp"; fi
mv -fT -- "$tmp" "$1"
trap - EXIT
"""


class Completed(BaseModel):
    """A command that ran to its end on an appliance."""

    model_config = ConfigDict(frozen=True)

    status: int
    """Its exit status (negative: the signal that ended it)."""
    stdout: str
    stderr: str
    """The last 64 KiB of its stderr."""

    @property
    def ok(self) -> bool:
        return self.status == 0


class ApplianceCall(BaseModel):
    """One call's record, as `wodmail show` lists it among the order's hooks."""

    name: str
    ms: int
    ok: bool
    output: str = ""


Recorder = Callable[[ApplianceCall], None]


@dataclass
class _Output:
    status: int | None
    stdout: bytes
    stderr: bytes


class Appliance:
    """One appliance, by address, for one hook run (`ctx.appliance()` gives it)."""

    def __init__(
        self, pool: AppliancePool, address: str, *, record: Recorder | None = None,
        log: Any = None,
    ) -> None:
        self.address = address
        self._pool = pool
        self._record = record
        self._log = log or structlog.get_logger(__name__)

    async def run(
        self,
        *argv: str,
        input: str | bytes | None = None,
        sudo: bool = False,
        user: str | None = None,
        # The remote command's own limit (it is stopped on the appliance), not only ours.
        timeout: float | None = None,  # noqa: ASYNC109
        check: bool = True,
    ) -> Completed:
        """Run `argv` on the appliance and return its status and output.

        `sudo=True`: as root (`sudo -n`); `user="student3"`: as that user with its login
        environment, home and groups (`sudo -n -H -u student3` running a login `sh -l`, as
        `sudo su - student3` did). `input` is its stdin: the only way to pass a secret.
        `timeout` (default `appliances.command_timeout_seconds`): past it the command is stopped and
        `PeerUnavailable` raised. With `check`, a non-zero exit raises
        `ApplianceCommandFailed`.
        """
        if not argv:
            raise ValueError("run: no command")
        command = _command([str(arg) for arg in argv], sudo=sudo, user=user)
        label = _label([str(arg) for arg in argv], sudo=sudo, user=user)
        out = await self._call(label, command, _bytes(input), timeout, RUN_STDOUT_CAP,
                               check=check, privileged=sudo or user is not None, data=False)
        return Completed(status=_status(out), stdout=out.stdout.decode("utf-8", "replace"),
                         stderr=out.stderr.decode("utf-8", "replace"))

    async def write_file(
        self,
        path: str | PurePosixPath,
        data: str | bytes,
        mode: int = 0o644,
        owner: str | None = None,
        group: str | None = None,
        sudo: bool = False,
    ) -> None:
        """Replace `path` at once with `data` (a temp file in its folder, renamed), with
        `mode` and, when given, `owner`/`group` (which need `sudo=True` but for oneself)."""
        chown = f"{owner or ''}{':' + group if group else ''}"
        argv = ["sh", "-c", _WRITE_SCRIPT, "sh", str(path), f"{mode:o}", chown]
        label = f"{'sudo ' if sudo else ''}write {path}"
        await self._call(label, _command(argv, sudo=sudo, user=None), _bytes(data), None,
                         OUTPUT_CAP, check=True, privileged=sudo, data=False)

    async def read_file(
        self, path: str | PurePosixPath, *, sudo: bool = False, max_bytes: int = READ_CAP
    ) -> bytes:
        """The content of `path`; `ApplianceCommandFailed` if it is larger than `max_bytes`."""
        command = _command(["cat", "--", str(path)], sudo=sudo, user=None)
        label = f"{'sudo ' if sudo else ''}read {path}"
        out = await self._call(label, command, None, None, max_bytes, check=True,
                               privileged=sudo, data=True)
        return out.stdout

    async def read_tar(
        self, folder: str | PurePosixPath, *, sudo: bool = False, user: str | None = None,
        max_bytes: int = TAR_CAP,
    ) -> bytes:
        """A tar stream of `folder`'s content (names relative to it, `./...`), read as
        root (`sudo`) or as `user`; `ApplianceCommandFailed` past `max_bytes`."""
        argv = ["tar", "-C", str(folder), "-cf", "-", "."]
        label = _label(argv, sudo=sudo, user=user)
        out = await self._call(label, _command(argv, sudo=sudo, user=user), None, None,
                               max_bytes, check=True, privileged=sudo or user is not None,
                               data=True)
        return out.stdout

    # -- one call ----------------------------------------------------------------------------

    async def _call(
        self, label: str, command: str, stdin: bytes | None, seconds: float | None,
        limit: int, *, check: bool, privileged: bool, data: bool,
    ) -> _Output:
        """Run `command`, record it, and raise what its outcome calls for. `data`: stdout is
        content (read_file, read_tar), not shown in the record."""
        seconds = seconds or self._pool.settings.command_timeout_seconds
        started = time.monotonic()
        out: _Output | None = None
        try:
            out = await self._exchange(label, command, stdin, seconds, limit)
            self._judge(label, out, check=check, privileged=privileged, data=data)
        except Exception as exc:
            shown = _shown(out, data) if out is not None else str(exc)
            self._note(label, started, ok=False, output=shown)
            raise
        self._note(label, started, ok=True, output=_shown(out, data))
        return out

    async def _exchange(
        self, label: str, command: str, stdin: bytes | None, seconds: float, limit: int
    ) -> _Output:
        async with self._pool.session(self.address, command, open_within=seconds) as process:
            try:
                async with asyncio.timeout(seconds):
                    return await _converse(process, stdin, limit)
            except TimeoutError:
                _stop(process)
                raise PeerUnavailable(peer(self.address), f"{label}: not finished within "
                                      f"{seconds:g} s (stopped)") from None
            except _Overflow:
                _stop(process)
                raise ApplianceCommandFailed(
                    self.address, label, f"more than {limit} bytes of output (stopped)",
                    status=None, output="") from None
            except (asyncssh.Error, OSError) as exc:
                raise channel_failure(self.address, exc) from None

    def _judge(self, label: str, out: _Output, *, check: bool, privileged: bool,
               data: bool) -> None:
        if out.status is None:
            raise PeerUnavailable(peer(self.address), f"{label}: the connection was lost "
                                  "before the command's exit status came")
        if out.status != 0 and privileged:
            refusal = _sudo_refusal(out.stderr.decode("utf-8", "replace"))
            if refusal is not None:
                user = self._pool.login_user()
                raise PeerMisconfigured(
                    peer(self.address), f"sudo refused for {user} ({refusal}): give {user} "
                    f"passwordless sudo on the appliance (NOPASSWD in sudoers)")
        if out.status != 0 and check:
            raise ApplianceCommandFailed(self.address, label,
                                         f"exited with status {out.status}",
                                         status=out.status, output=_shown(out, data))

    def _note(self, label: str, started: float, *, ok: bool, output: str) -> None:
        call = ApplianceCall(name=f"appliance {self.address}: {scrub_text(label)}",
                             ms=int((time.monotonic() - started) * 1000), ok=ok,
                             output=scrub_text(output[-OUTPUT_CAP:]))
        if ok:
            self._log.debug("appliance call", call=call.name, ms=call.ms)
        else:
            self._log.warning("appliance call failed", call=call.name, ms=call.ms,
                              output=call.output[-500:])
        if self._record is not None:
            self._record(call)


class _Overflow(Exception):
    pass


async def _converse(
    process: asyncssh.SSHClientProcess[bytes], stdin: bytes | None, limit: int
) -> _Output:
    """Feed stdin, read stdout (at most `limit` bytes) and stderr (its tail) to their ends."""
    feeding = asyncio.ensure_future(_feed(process, stdin))
    reading = asyncio.ensure_future(_read_all(process.stdout, limit))
    tail = asyncio.ensure_future(_read_tail(process.stderr, OUTPUT_CAP))
    try:
        stdout, stderr = await asyncio.gather(reading, tail)
        await process.wait_closed()
    finally:
        # Whatever ended this (the output cap, a timeout, a lost connection), none of the
        # three outlives the call.
        for task in (feeding, reading, tail):
            task.cancel()
        await asyncio.gather(feeding, reading, tail, return_exceptions=True)
    return _Output(process.returncode, stdout, stderr)


async def _feed(process: asyncssh.SSHClientProcess[bytes], stdin: bytes | None) -> None:
    # A command that exits without reading its stdin closes the channel under us: fine.
    with suppress(asyncssh.Error, OSError):
        if stdin:
            process.stdin.write(stdin)
            await process.stdin.drain()
        process.stdin.write_eof()


async def _read_all(stream: asyncssh.SSHReader[bytes], limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _Overflow
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_tail(stream: asyncssh.SSHReader[bytes], keep: int) -> bytes:
    kept = b""
    while chunk := await stream.read(_CHUNK):
        kept = (kept + chunk)[-keep:]
    return kept


def _stop(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Ask the remote command to end (sudo passes TERM on), then close the channel."""
    with suppress(asyncssh.Error, OSError):
        process.terminate()
    process.close()


def _command(argv: Sequence[str], *, sudo: bool, user: str | None) -> str:
    if user is not None:
        # Not `sudo -i`: it hands the command to the user's shell with `$` unescaped, so an
        # argument's `$1` would be expanded there. A login `sh -l` gets the arguments as
        # they are, in the user's home with their profile (as `sudo su - user -c` did).
        prefix = ["sudo", "-n", "-H", "-u", user, "--", "/bin/sh", "-lc",
                  'cd && exec "$0" "$@"']
    elif sudo:
        prefix = ["sudo", "-n", "--"]
    else:
        prefix = []
    return shlex.join([*prefix, *argv])


def _label(argv: Sequence[str], *, sudo: bool, user: str | None) -> str:
    shown = shlex.join(argv)
    if len(shown) > _LABEL_CHARS:
        shown = shown[:_LABEL_CHARS - 3] + "..."
    if user is not None:
        return f"as {user}: {shown}"
    return f"sudo {shown}" if sudo else shown


def _bytes(data: str | bytes | None) -> bytes | None:
    return data.encode("utf-8") if isinstance(data, str) else data


def _status(out: _Output) -> int:
    assert out.status is not None
    return out.status


def _shown(out: _Output, data: bool) -> str:
    stdout = b"" if data else out.stdout[-OUTPUT_CAP:]
    return (stdout + out.stderr).decode("utf-8", "replace")


def _sudo_refusal(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.startswith("sudo: ") and any(words in line for words in _SUDO_REFUSALS):
            return line.removeprefix("sudo: ").strip()
        if "Sorry, user" in line and "not allowed" in line:
            return line.strip()
    if "sudo: not found" in stderr or "sudo: command not found" in stderr:
        return "sudo is not installed"
    return None
