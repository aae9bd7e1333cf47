"""Burst summaries: many similar events become one log line per burst, with counts.

A flood (thousands of refused connections, accept() failing for want of file descriptors,
refusals from one peer) must not flood the log too. The first event of a burst opens a
window; at its end one line says how many events of each kind happened in it. The next
event after that opens a new window, so a long flood costs one line per window.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import structlog

log = structlog.get_logger(__name__)

DEFAULT_WINDOW_SECONDS = 10.0
_KEYS_SHOWN = 20  # the busiest keys named in a summary line; the rest only counted


class BurstLog:
    """Counts events by key; logs `event` once per window with the counts (needs a loop)."""

    def __init__(
        self, event: str, *, window: float = DEFAULT_WINDOW_SECONDS, level: str = "warning"
    ) -> None:
        self._event = event
        self._window = window
        self._level = level
        self._counts: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self.total = 0  # every event counted, for tests and metrics

    def add(self, key: str, **fields: Any) -> None:
        """Count one event; the first of a window also schedules the summary line."""
        self._counts[key] += 1
        self.total += 1
        if self._timer is None:
            self._fields = fields
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a sync caller): summarise at once
                self.flush()
                return
            self._timer = loop.call_later(self._window, self.flush)

    def flush(self) -> None:
        """Log the summary of the window so far (nothing if it is empty)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        busiest = dict(counts.most_common(_KEYS_SHOWN))
        getattr(log, self._level)(
            self._event,
            count=sum(counts.values()),
            by=busiest,
            others=len(counts) - len(busiest),
            window_seconds=self._window,
            **getattr(self, "_fields", {}),
        )
