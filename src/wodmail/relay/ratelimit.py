"""The relay's rate limit: at most `limit` mails per client in any window of time.

A sliding window (the times of the mails taken in the last `window_seconds`, per client):
"60 a minute" means at most 60 in any 60 seconds, never 60 at the end of one minute and 60
more at the start of the next. The clock is injectable, so tests move time instead of
sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """`take(key)`: True (and counted) while `key` has taken fewer than `limit` in the window."""

    _MAX_KEYS = 10_000  # beyond this many clients, forget those with nothing in the window

    def __init__(
        self, limit: int, window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_seconds <= 0:
            raise ValueError(f"need limit >= 1 and window > 0, got {limit}, {window_seconds}")
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self._taken: dict[str, deque[float]] = {}

    def take(self, key: str) -> bool:
        now = self.clock()
        taken = self._recent(key, now)
        if len(taken) >= self.limit:
            return False
        taken.append(now)
        return True

    def retry_in(self, key: str) -> float:
        """Seconds until `key` may take one more (0 if it may now)."""
        now = self.clock()
        taken = self._recent(key, now)
        if len(taken) < self.limit:
            return 0.0
        return max(0.0, taken[0] + self.window_seconds - now)

    def _recent(self, key: str, now: float) -> deque[float]:
        taken = self._taken.get(key)
        if taken is None:
            if len(self._taken) >= self._MAX_KEYS:
                self._forget_idle(now)
            taken = self._taken[key] = deque()
        while taken and taken[0] <= now - self.window_seconds:
            taken.popleft()
        return taken

    def _forget_idle(self, now: float) -> None:
        horizon = now - self.window_seconds
        self._taken = {key: taken for key, taken in self._taken.items()
                       if taken and taken[-1] > horizon}
