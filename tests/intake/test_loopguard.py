"""The daemon's stderr stays JSON: what Python cannot raise (an error in a `__del__`, e.g. a
transport finalised while the process is out of file descriptors) is logged, not printed."""

from __future__ import annotations

import asyncio
import errno
import gc
import sys

import pytest
from structlog.testing import capture_logs

from wodmail.intake.loopguard import LoopErrors


class _FailsWhenFinalised:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __del__(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "event", "level"),
    [
        (OSError(errno.EMFILE, "Too many open files"), "error ignored while out of resources",
         "warning"),
        (RuntimeError("broken"), "error ignored (Python could not raise it)", "error"),
    ],
)
async def test_errors_python_cannot_raise_become_log_events(monkeypatch, error, event, level):
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    LoopErrors().install(asyncio.get_running_loop())
    with capture_logs() as logged:
        doomed = _FailsWhenFinalised(error)
        del doomed
        gc.collect()
    [entry] = [e for e in logged if e["event"] == event]
    assert entry["log_level"] == level
    assert type(error).__name__ in entry["error"]
