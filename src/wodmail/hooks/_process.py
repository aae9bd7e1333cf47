"""Running a hook's process: its own session, output to a file, killed at its time limit.

Output goes to a file, not a pipe (a background child keeping a pipe open would hold up
the wait for the script itself); the last `OUTPUT_CAP` bytes are kept, with secrets masked.

Each run gets a `Workspace`: a folder of the daemon's own that the script's user may only
pass through, holding the output file (the process only gets a descriptor on it, and the
daemon reads it back through that descriptor) and `work/`, the one folder that user may
write, with the `vars` file (WODMAIL_VARS_FILE). Whatever the script does in `work/`, the
daemon reads `vars` only as a regular file of that user, never through a link.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wodmail.errors import HookFailed
from wodmail.hooks.scriptenv import ScriptUser
from wodmail.logs import scrub_text

OUTPUT_CAP = 64 * 1024
INHERITED_ENV = ("PATH", "HOME", "LANG")


def base_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env.setdefault("PATH", os.defpath)
    account = pwd.getpwuid(os.geteuid())
    env.setdefault("HOME", account.pw_dir)
    env["USER"] = env["LOGNAME"] = account.pw_name
    return env


@dataclass(frozen=True)
class Finished:
    status: int | None
    """The exit status (negative: killed by that signal); None when it timed out."""
    output: str

    def failure(self, kill_after: float) -> str:
        """Why the run failed: `timed out after 5 s`, `exited with status 3` ..."""
        if self.status is None:
            return f"timed out after {kill_after:g} s"
        return status_text(self.status)


@dataclass(frozen=True)
class Workspace:
    """One hook run's scratch space (see the module's doc)."""

    folder: Path
    """The daemon's own; the script's user may pass through it, not list or change it."""
    owner: int
    """The uid the script runs as: `work/` and `vars` are given to it."""

    @property
    def output(self) -> Path:
        return self.folder / "output"

    @property
    def work(self) -> Path:
        return self.folder / "work"

    @property
    def vars_file(self) -> Path:
        return self.work / "vars"


@contextmanager
def hook_workspace(user: ScriptUser | None) -> Iterator[Workspace]:
    """A fresh Workspace for a process run as `user` (None: as the daemon), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="wodmail-hook-"))
    try:
        work = folder / "work"
        work.mkdir(mode=0o700)
        vars_file = work / "vars"
        vars_file.touch(mode=0o600)
        if user is not None:
            os.chown(vars_file, user.uid, user.gid)
            os.chown(work, user.uid, user.gid)
            folder.chmod(0o711)
        yield Workspace(folder, os.geteuid() if user is None else user.uid)
    finally:
        # Symlink-safe (descriptor-based) removal, whatever the script left in work/.
        shutil.rmtree(folder, ignore_errors=True)


async def run_checked(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    kill_after: float,
    workspace: Workspace,
) -> Finished:
    """Runs a command as the daemon; HookFailed (output masked) unless it exits 0."""
    finished = await start_process(
        name, argv, env=env, cwd=cwd, kill_after=kill_after, workspace=workspace
    )
    output = scrub_text(finished.output)
    if finished.status != 0:
        raise HookFailed(name, finished.failure(kill_after), output=output)
    return Finished(finished.status, output)


async def start_process(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    kill_after: float,
    workspace: Workspace,
    user: ScriptUser | None = None,
    pass_fds: Sequence[int] = (),
) -> Finished:
    """`run_process`, with a failure to start as HookFailed; the output is not masked yet."""
    try:
        return await run_process(argv, env=env, cwd=cwd, kill_after=kill_after,
                                 workspace=workspace, user=user, pass_fds=pass_fds)
    except OSError as exc:
        raise HookFailed(name, f"could not start: {exc}") from exc


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    kill_after: float,
    workspace: Workspace,
    user: ScriptUser | None = None,
    pass_fds: Sequence[int] = (),
) -> Finished:
    """Runs `argv` to its end or its time limit; its output (unmasked) is the tail of
    what it printed."""
    identity: dict[str, Any] = {}
    if user is not None:
        identity = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    sink = os.open(workspace.output, flags, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            **identity,
        )
        status = await _wait(process, kill_after)
        return Finished(status=status, output=tail(sink))
    finally:
        os.close(sink)


async def _wait(process: asyncio.subprocess.Process, kill_after: float) -> int | None:
    try:
        async with asyncio.timeout(kill_after):
            return await process.wait()
    except TimeoutError:
        kill_group(process.pid)
        await process.wait()
        return None
    except BaseException:
        kill_group(process.pid)
        raise


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def status_text(status: int) -> str:
    if status < 0:
        try:
            return f"killed by signal {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


def tail(fd: int) -> str:
    """The last OUTPUT_CAP bytes written to `fd` (not masked: the caller masks them once
    every secret the hook declared is known)."""
    size = os.fstat(fd).st_size
    start = max(0, size - OUTPUT_CAP)
    data = os.pread(fd, size - start, start)
    text = data.decode("utf-8", errors="replace")
    if start:
        return f"[... first {start} bytes left out ...]\n{text}"
    return text


def cap_text(text: str) -> str:
    return text if len(text) <= OUTPUT_CAP else text[-OUTPUT_CAP:]
