"""Who may ask the status listener: the Host header check and the bearer token.

Students have a shell (and maybe a browser) on this machine. The Host check stops DNS
rebinding: a page from a name an attacker controls, made to resolve to 127.0.0.1, reaches
the listener with that name in its Host header and is refused. The bearer token
(`status.token_file`) keeps every path but `/healthz` from any local user without it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from wodmail.config import is_loopback, split_host, url_host
from wodmail.status.request import Request

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
OPEN_PATHS = frozenset({"/healthz"})


@dataclass(frozen=True)
class Refusal:
    status: int
    kind: str  # the `reason` label of wodmail_status_refusals_total
    message: str  # one line for the client
    headers: tuple[tuple[str, str], ...] = ()


class HostCheck:
    """Accepts the listen address, the loopback names when it listens on loopback (or on
    every address), and `status.hostnames`; each without a port or with the listening one
    (a `status.hostnames` entry with a port matches that port only)."""

    def __init__(self, listen_host: str, port: int, hostnames: Sequence[str]) -> None:
        names = {url_host(listen_host)}
        if is_loopback(listen_host, wildcard=True):
            names.update(LOOPBACK_HOSTS)
        names.update(name for name in hostnames if split_host(name)[1] is None)
        self._names = frozenset(names)
        self._with_port = frozenset(name for name in hostnames if split_host(name)[1] is not None)
        self._port = port

    def refusal(self, request: Request) -> Refusal | None:
        values = request.values("host")
        if not values:
            if request.version == "HTTP/1.0":
                return None  # HTTP/1.0 clients may send none; a browser always does
            return Refusal(400, "host", "a Host header is required")
        if len(values) > 1:
            return Refusal(400, "host", "more than one Host header")
        try:
            host, port = split_host(values[0])
        except ValueError as exc:
            return Refusal(400, "host", f"malformed Host header: {exc}")
        if host in self._names and port in (None, self._port):
            return None
        if f"{host}:{port}" in self._with_port:
            return None
        return Refusal(421, "host", "this listener does not answer for that Host "
                       "(see status.hostnames)")


class BearerCheck:
    """Requires `Authorization: Bearer <token>`; compared in constant time (as digests,
    so not even the token's length shows in the timing)."""

    _CHALLENGE = (("WWW-Authenticate", 'Bearer realm="wodmail status"'),)

    def __init__(self, token: str) -> None:
        self._digest = _digest(token)

    def refusal(self, request: Request) -> Refusal | None:
        if request.path in OPEN_PATHS:
            return None
        values = request.values("authorization")
        scheme, _, given = (values[0] if len(values) == 1 else "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return Refusal(401, "token", "a bearer token is required "
                           "(Authorization: Bearer <the token of status.token_file>)",
                           self._CHALLENGE)
        if not hmac.compare_digest(_digest(given.strip()), self._digest):
            return Refusal(401, "token", "wrong bearer token", self._CHALLENGE)
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
