"""Execution makes way for the intake: while clients are handing orders over, at most
`while_busy` orders run a step at a time, instead of `dispatch.concurrency`.

Why: intake and execution share one event loop and two cores, and a CREATE costs tens of
milliseconds of CPU (templates, copies, chpasswd) where taking an order costs about one.
At full concurrency the orders already taken starve the sessions of the ones arriving (162
orders/s instead of Postfix's 572 in issue #15), though a client waiting for its 250 is
what can least wait: the portal gives up, netcat times out. Taking a burst first, then
executing it at full concurrency, also runs every order of the burst sooner on the whole.

The intake is busy while a session received input within the last `quiet_seconds` (an idle
connection does not count). Execution never stops: `while_busy` orders go on, and a step
waits at most `max_wait_seconds` for its turn, so that a flood of mail slows orders down but
cannot hold them up for good. A step that only waits (`JobContext.idle`) gives its turn back.
"""

from __future__ import annotations

import asyncio
from collections import deque

QUIET_SECONDS = 0.05
MAX_WAIT_SECONDS = 1.0


class IntakeFirst:
    def __init__(
        self,
        *,
        while_busy: int = 1,
        quiet_seconds: float = QUIET_SECONDS,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
    ) -> None:
        self.while_busy = while_busy
        self._quiet = quiet_seconds
        self._max_wait = max_wait_seconds
        self._last_input = float("-inf")
        self._in_step = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._calm: asyncio.TimerHandle | None = None

    def input_received(self) -> None:
        """A session received input (a command or a line of a message): called per line."""
        self._last_input = asyncio.get_running_loop().time()

    @property
    def last_input(self) -> float:
        """When a session last received input (the event loop's clock)."""
        return self._last_input

    def busy(self) -> bool:
        return asyncio.get_running_loop().time() - self._last_input < self._quiet

    async def enter(self) -> None:
        """Waits for this step's turn (not at all while the intake is quiet)."""
        if self._in_step < self.while_busy or not self.busy():
            self._in_step += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        self._watch_calm()
        try:
            await asyncio.wait_for(asyncio.shield(turn), self._max_wait)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if _granted(turn):
                self.leave()
            raise
        finally:
            if turn in self._waiting:
                self._waiting.remove(turn)
        if not _granted(turn):
            turn.cancel()
            self._in_step += 1  # its turn did not come in time: it goes anyway

    def leave(self) -> None:
        self._in_step -= 1
        self._wake()

    def _wake(self) -> None:
        """Grants turns: to every waiting step once the intake is quiet, else while fewer
        than `while_busy` steps run (a turn is counted when granted, not when taken)."""
        calm = not self.busy()
        while self._waiting and (calm or self._in_step < self.while_busy):
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                self._in_step += 1
        if self._waiting:
            self._watch_calm()

    def _watch_calm(self) -> None:
        """Looks again when the intake would be quiet, if no step ends before."""
        if self._calm is not None:
            return
        loop = asyncio.get_running_loop()
        when = max(self._last_input + self._quiet, loop.time()) + 0.001
        self._calm = loop.call_at(when, self._calm_check)

    def _calm_check(self) -> None:
        self._calm = None
        self._wake()


def _granted(turn: asyncio.Future[None]) -> bool:
    return turn.done() and not turn.cancelled()
