"""Running a hook's process: its own session, output to a file, killed at its time limit.

Output goes to a file, not a pipe (a background child keeping a pipe open would hold up
the wait for the script itself); the last `OUTPUT_CAP` bytes are kept, with secrets masked.
"""

from __future__ import annotations

import asyncio
import os
import pwd
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


async def run_checked(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    kill_after: float,
    scratch: Path,
    user: ScriptUser | None = None,
) -> Finished:
    try:
        finished = await run_process(
            argv, env=env, cwd=cwd, kill_after=kill_after, scratch=scratch, user=user
        )
    except OSError as exc:
        raise HookFailed(name, f"could not start: {exc}") from exc
    if finished.status is None:
        raise HookFailed(name, f"timed out after {kill_after:g} s", output=finished.output)
    if finished.status != 0:
        raise HookFailed(name, status_text(finished.status), output=finished.output)
    return finished


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    kill_after: float,
    scratch: Path,
    user: ScriptUser | None = None,
) -> Finished:
    identity: dict[str, Any] = {}
    if user is not None:
        identity = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}
    # Output goes to a file, not a pipe: a background child keeping a pipe open would
    # otherwise hold up the wait for the script itself.
    output_path = scratch / "output"
    sink = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            **identity,
        )
    finally:
        os.close(sink)
    status: int | None
    try:
        async with asyncio.timeout(kill_after):
            status = await process.wait()
    except TimeoutError:
        kill_group(process.pid)
        await process.wait()
        status = None
    except BaseException:
        kill_group(process.pid)
        raise
    return Finished(status=status, output=tail(output_path))


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


def tail(path: Path) -> str:
    with path.open("rb") as stream:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(max(0, size - OUTPUT_CAP))
        data = stream.read()
    # Stock scripts run under `set -x`: tokens and passwords would show in their output.
    text = scrub_text(data.decode("utf-8", errors="replace"))
    if size > OUTPUT_CAP:
        return f"[... first {size - OUTPUT_CAP} bytes left out ...]\n{text}"
    return text


def cap_text(text: str) -> str:
    return text if len(text) <= OUTPUT_CAP else text[-OUTPUT_CAP:]


@contextmanager
def scratch_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wodmail-hook-") as folder:
        yield Path(folder)


def empty_file(path: Path) -> Path:
    path.touch(mode=0o600)
    return path
