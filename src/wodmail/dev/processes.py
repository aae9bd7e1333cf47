"""Stopping a child process the way a service manager does: a signal, a grace, then SIGKILL.

The demo, the stand-ins, the tests and the benchmarks start real daemons (wodmail,
JupyterHub, slapd) as child processes; this is how each of them ends one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess


def stop_process(
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    grace: float,
    signum: signal.Signals = signal.SIGTERM,
) -> int:
    """Send `signum`, wait up to `grace` seconds, then SIGKILL; returns the exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


async def stop_subprocess(
    process: asyncio.subprocess.Process,
    *,
    grace: float,
    signum: signal.Signals = signal.SIGTERM,
) -> int:
    """`stop_process` for an asyncio subprocess."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        try:
            async with asyncio.timeout(grace):
                return await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    return await process.wait()
