"""Is this wodmail healthy? What `/healthz` answers (200, or 503 when unhealthy).

Unhealthy means wodmail itself cannot do its job: the journal takes no write, the SMTP port
does not accept, or the event loop is stalled. The peers' last results (portal, hub) are
shown but do not make wodmail unhealthy: restarting it would not bring a portal back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from wodmail import metrics

# A commit normally takes milliseconds; a journal that takes no write for this long (locked by
# another process, a disk that stalls) is reported. Orders keep waiting for it meanwhile.
PROBE_SECONDS = 3.0
# The heartbeat runs every second: a loop that missed it this long is stalled.
LOOP_STALL_SECONDS = 5.0


class HealthSource(Protocol):
    accepting: bool
    last_beat: float
    # 1 at start, one more for every reload that applied a config (SIGHUP): `systemctl
    # reload` can return before the reload is done, this tells when it is.
    config_generation: int
    # The last reload's outcome: "applied", "refused" (the running config stays) or None;
    # `reloads` counts the reloads finished either way.
    last_reload: str | None
    reloads: int

    async def probe_journal(self) -> None:
        """One real commit to the journal; raises when it cannot be written."""
        ...


@dataclass
class Check:
    ok: bool
    detail: str

    def public(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


class Health:
    """Runs the checks; at most one journal probe is in flight (a stuck one is reported)."""

    def __init__(self, source: HealthSource) -> None:
        self._source = source
        self._probe: asyncio.Task[None] | None = None
        self._probe_started = 0.0

    async def report(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "journal": await self._journal(),
            "smtp": Check(self._source.accepting, "accepting connections"
                          if self._source.accepting else "not accepting connections"),
            "loop": self._loop(),
        }
        healthy = all(check.ok for check in checks.values())
        body: dict[str, Any] = {
            "status": "ok" if healthy else "unhealthy",
            "checks": {name: check.public() for name, check in checks.items()},
            "config": {"generation": self._source.config_generation,
                       "reloads": self._source.reloads,
                       "last_reload": self._source.last_reload},
            "peers": {
                peer: {"ok": result.ok, "at": _iso(result.at), "detail": result.detail}
                for peer, result in sorted(metrics.LAST_PEER_RESULTS.items())
            },
        }
        return healthy, body

    async def _journal(self) -> Check:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._source.probe_journal())
            self._probe_started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), PROBE_SECONDS)
        except TimeoutError:
            waited = time.monotonic() - self._probe_started
            return Check(False, f"a write has waited {waited:.0f} s for the journal")
        except Exception as exc:
            return Check(False, f"cannot write the journal: {exc}")
        return Check(True, "writable")

    def _loop(self) -> Check:
        stalled = time.monotonic() - self._source.last_beat
        if stalled > LOOP_STALL_SECONDS:
            return Check(False, f"the event loop missed its heartbeat for {stalled:.0f} s")
        return Check(True, "responsive")

    def close(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")
