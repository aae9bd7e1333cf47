"""How the daemon learns that a program it ran (chpasswd, a hook script) has exited.

On Python 3.11, asyncio starts a thread per program, blocked in `waitpid`, for as long as
the program runs: a thread made and torn down for each chpasswd of each CREATE. Python 3.12
and later watch a pidfd in the event loop instead, and so does this watcher on 3.11: the
exit is one more readable descriptor for the loop that started the program.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from typing import Any

# Child watchers are gone from Python 3.14's asyncio; this one is only installed on 3.11.
_Watcher: Any = getattr(asyncio, "AbstractChildWatcher", object)


class PidfdWatcher(_Watcher):  # type: ignore[misc]
    """A child watcher on pidfds, serving whichever event loop starts the program (each
    daemon a test starts runs its own loop; the stock watcher is bound to one)."""

    def add_child_handler(self, pid: int, callback: Any, *args: Any) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._exited, loop, pidfd, pid, callback, args)

    @staticmethod
    def _exited(
        loop: asyncio.AbstractEventLoop, pidfd: int, pid: int, callback: Any, args: Any
    ) -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else: its status is lost
            code = 255
        else:
            code = os.waitstatus_to_exitcode(status)
        callback(pid, code, *args)

    def remove_child_handler(self, pid: int) -> bool:
        return False  # the reader goes with the program's exit (or the loop)

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass  # every call finds its own running loop

    def close(self) -> None:
        pass

    def is_active(self) -> bool:
        return True

    def __enter__(self) -> PidfdWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def watch_children_with_pidfds() -> None:
    """Installs `PidfdWatcher` on Python 3.11 where the kernel has pidfds (Linux 5.3+);
    later Pythons already watch pidfds, and an older kernel keeps the threads."""
    if sys.version_info >= (3, 12) or isinstance(_current(), PidfdWatcher):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(PidfdWatcher())


def _current() -> asyncio.AbstractChildWatcher | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return asyncio.get_child_watcher()
        except (NotImplementedError, RuntimeError):
            return None
