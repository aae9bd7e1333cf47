"""The seam between intake and execution: accepted orders are handed to an `Executor`.

The intake (SMTP → journal) only ever calls `submit` with a committed job; the executor owns
everything after that and records the outcome in the journal itself. The dispatcher that runs
the workshop lifecycle implements this protocol.
"""

from __future__ import annotations

from typing import Protocol

from wodmail.journal.jobs import Job


class Executor(Protocol):
    async def start(self) -> None:
        """Called once before the first `submit`."""

    def submit(self, job: Job) -> None:
        """Takes a committed job; must not block (the SMTP session is waiting)."""

    async def stop(self, grace: float) -> None:
        """Stops taking work; waits up to `grace` seconds for running orders, then cancels.

        A cancelled order stays `running` in the journal and is run again on the next start.
        """
