"""The resource budget of one render: output size and wall time.

A template is code from a workshop author. Jinja's sandbox stops it reaching Python
internals, not from building a 100 MB string or looping for hours, so each render gets a
budget (see the checks in `wodmail.templating.renderer`). The budget of the render running
in this context is `current()`; filters that can run long on their own (the regex filters)
ask `seconds_left()` how long they may take.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from jinja2.exceptions import SecurityError

DEFAULT_MAX_OUTPUT_CHARS = 32 * 1024 * 1024
DEFAULT_TIME_LIMIT_SECONDS = 30.0
_TICKS_PER_CLOCK_CHECK = 256


class Budget:
    """The limits of one render (and of the variable values it expands)."""

    def __init__(self, max_chars: int, seconds: float) -> None:
        self.max_chars = max_chars
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._ticks = 0

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % _TICKS_PER_CLOCK_CHECK == 0 and time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than the {self.seconds:g} s limit")

    def size(self, size: int, what: str) -> None:
        if size > self.max_chars:
            raise SecurityError(f"{what} of {size} characters: over the limit of {self.max_chars}")

    def left(self) -> float:
        return self.deadline - time.monotonic()


_CURRENT: ContextVar[Budget | None] = ContextVar("wodmail_render_budget", default=None)


def current() -> Budget | None:
    """The budget of the render running in this context, if any."""
    return _CURRENT.get()


@contextmanager
def limited(max_chars: int, seconds: float) -> Iterator[Budget]:
    """A fresh budget for the render run inside the block."""
    budget = Budget(max_chars, seconds)
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def seconds_left() -> tuple[float, float]:
    """(seconds the current render has left, its whole limit); outside a render (a variable
    expanded on its own), the default limit."""
    budget = current()
    if budget is None:
        return DEFAULT_TIME_LIMIT_SECONDS, DEFAULT_TIME_LIMIT_SECONDS
    return budget.left(), budget.seconds
