"""asyncio's own error reports, as JSON log lines, and accept() failures once per burst.

asyncio reports errors it cannot raise anywhere (a failed `accept()`, a task exception never
retrieved) through the loop's exception handler, whose default prints multi-line tracebacks
through stdlib logging: not JSON, and for `accept()` failing with EMFILE one per attempt.
asyncio already backs off (it stops accepting for a second after such a failure); this
handler makes the report one JSON summary line per burst instead of a traceback per try.

Python itself reports exceptions it cannot raise anywhere (in a `__del__`, e.g. a transport
finalised while the process is out of file descriptors) by printing them to stderr; while
the loop runs they become JSON log lines too (`sys.unraisablehook`).
"""

from __future__ import annotations

import asyncio
import errno
import sys
from typing import Any

import structlog

from wodmail.intake.bursts import BurstLog

log = structlog.get_logger(__name__)

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class LoopErrors:
    """A loop exception handler: `install(loop)` once the loop runs."""

    def __init__(self) -> None:
        self.accept_failures = BurstLog(
            "accept() failed for lack of resources; asyncio pauses accepting for a second",
            level="error",
        )

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self.handle)
        sys.unraisablehook = _unraisable


    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS:
            self.accept_failures.add(errno.errorcode.get(error.errno or 0, str(error.errno)))
            return
        if isinstance(error, ValueError) and "_start_serving" in str(context.get("message")):
            # After EMFILE, asyncio (3.11) schedules an accept retry per backlog slot; those
            # that fire once the server has closed find its socket gone: nothing to report.
            log.debug("accept retry after the server closed", error=str(error))
            return
        log.error(
            "asyncio reported an error",
            message=context.get("message"),
            error=None if error is None else f"{type(error).__name__}: {error}",
            exc_info=error if isinstance(error, BaseException) else None,
        )


def _unraisable(unraisable: Any) -> None:
    error = unraisable.exc_value
    if isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS:
        log.warning("error ignored while out of resources", where=repr(unraisable.object),
                    error=f"{type(error).__name__}: {error}")
        return
    log.error("error ignored (Python could not raise it)", where=repr(unraisable.object),
              message=unraisable.err_msg,
              error=None if error is None else f"{type(error).__name__}: {error}")
