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


class PeerRate:
    """A token bucket per peer: up to `burst` events at once, then `per_second` on average.

    For refusals: a client sending thousands of refused mails gets each refused, but only
    the first ones (and then a steady trickle) are recorded one by one; the rest are counted
    in one summary line per burst.
    """

    _MAX_PEERS = 10_000  # forget all buckets beyond this many peers (they refill anyway)

    def __init__(self, burst: int, per_second: float) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # peer -> (tokens, when)

    def take(self, peer: str, now: float) -> bool:
        """One event for `peer` at `now` (monotonic seconds): True if within its budget."""
        tokens, then = self._buckets.get(peer, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self._MAX_PEERS and peer not in self._buckets:
            self._buckets.clear()
        self._buckets[peer] = (tokens, now)
        return allowed
