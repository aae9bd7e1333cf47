"""Asking a running daemon's status listener how its configuration stands (`wodmail reload
--wait`): `/healthz`'s `config` block, read over plain HTTP from this machine.

`/healthz` needs no token; the listener answers a Host it knows: its listen address, or on
loopback and wildcard addresses `127.0.0.1` / `[::1]`, which is where the probe connects.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from wodmail.config import Status
from wodmail.errors import WodmailError

# A wildcard listen address is reached on loopback, in its own family.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
POLL_SECONDS = 0.1


class ConfigState(BaseModel):
    """`/healthz`'s `config`: generation (1 at start, one more per reload applied), reloads
    finished (applied or refused) and the last one's outcome."""

    generation: int
    reloads: int
    last_reload: str | None


@dataclass(frozen=True)
class HealthProbe:
    host: str
    port: int
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, status: Status, timeout: float = 10.0) -> HealthProbe:
        """The probe of the listener `status` configures; each request waits at most
        `timeout` seconds (and never more than 10)."""
        address = status.address()
        if address is None:
            raise WodmailError("waiting for the reload reads /healthz: status.listen is off "
                               "(null); without it, follow the log for `configuration reloaded`")
        host, port = address
        if port == 0:
            raise WodmailError("waiting for the reload reads /healthz: status.listen has port 0 "
                               "(any free port), set a fixed one")
        return cls(_WILDCARDS.get(host, host), port, min(timeout, 10.0))

    def config_state(self) -> ConfigState:
        """The daemon's config block now (a 503 from an unhealthy daemon still carries it)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            connection.request("GET", "/healthz",
                               headers={"Host": f"{host}:{self.port}", "Connection": "close"})
            response = connection.getresponse()
            body = response.read(1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            raise WodmailError(f"no answer from the status listener http://{host}:{self.port}"
                               f"/healthz: {exc}") from None
        finally:
            connection.close()
        try:
            return ConfigState.model_validate(_config_block(json.loads(body)))
        except (ValueError, ValidationError):
            raise WodmailError(f"http://{host}:{self.port}/healthz answered {response.status} "
                               "without wodmail's config block") from None

    def wait_past(self, before: ConfigState, timeout: float) -> ConfigState | None:
        """The config state once a reload after `before` has finished; None if none did
        within `timeout` seconds (answers missing meanwhile are waited through)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                now = self.config_state()
            except WodmailError:
                now = None
            if now is not None and now.reloads > before.reloads:
                return now
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)


def _config_block(body: Any) -> Any:
    return body.get("config") if isinstance(body, dict) else None
