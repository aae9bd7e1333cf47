"""What the portal and hub clients share: their construction checks, one timed, logged request,
and reading odd bodies.

Transport failures (refused, reset, timed out) become `PeerUnavailable`; statuses are left
to each client, which knows what they mean for its peer. Logs carry method, path, status
and duration only: never headers (tokens) nor bodies (passwords).
"""

from __future__ import annotations

import json
import time
from typing import Any, Self

import httpx
import structlog

from wodmail import metrics
from wodmail.errors import ConfigurationError, PeerUnavailable
from wodmail.logs import register_secret
from wodmail.peers.transport import StreamTransport, usable_for

log = structlog.get_logger(__name__)

_SNIPPET_CHARS = 200


async def send(
    client: httpx.AsyncClient,
    *,
    peer: str,
    event: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
) -> httpx.Response:
    """One request; logged as `event` with method, path, status and duration_ms."""
    started = time.monotonic()
    try:
        response = await client.request(method, path, headers=headers, json=json_body)
    except httpx.TimeoutException as exc:
        _log(peer, event, method, path, None, started, error=type(exc).__name__)
        timeout = client.timeout.read
        raise PeerUnavailable(peer, f"{method} {path}: no answer within {timeout} s") from exc
    except httpx.TransportError as exc:
        _log(peer, event, method, path, None, started, error=type(exc).__name__)
        raise PeerUnavailable(
            peer, f"{method} {path}: cannot reach {client.base_url} ({_reason(exc)})"
        ) from exc
    _log(peer, event, method, path, response.status_code, started)
    return response


def describe_body(response: httpx.Response) -> str:
    """A short, readable account of an error body: its `message`, its text, or '(empty body)'."""
    text = response.text.strip()
    if not text:
        return "(empty body)"
    try:
        payload = json.loads(text)
    except ValueError:
        return _shorten(text)
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return _shorten(payload["message"])
    return _shorten(json.dumps(payload))


def _log(
    peer: str,
    event: str,
    method: str,
    path: str,
    status: int | None,
    started: float,
    **extra: Any,
) -> None:
    seconds = time.monotonic() - started
    metrics.peer_call(peer, method, seconds, status=status, error=extra.get("error"))
    duration_ms = round(seconds * 1000, 1)
    unavailable = status is None or status >= 500
    emit = log.warning if unavailable else log.info
    emit(event, method=method, path=path, status=status, duration_ms=duration_ms, **extra)


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


class ClientBase:
    """What both peer clients share: the checks of their settings, and one
    `httpx.AsyncClient` on the peer's base URL, usable with `async with`."""

    def __init__(
        self,
        peer: str,
        base_url: str,
        *,
        credential: str,
        credential_name: str,
        secret: str,
        timeout: float,
        positive: dict[str, float] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Checks the settings both peers have, then opens the client on `_root(base_url)`.

        `peer` names the peer in the messages ("portal URL must start with ...", "portal user
        is empty"); `credential` must not be empty; `timeout` and the client's own settings in
        `positive` must be above 0 (one ValueError names them all); `secret` is registered so
        that no log shows it. Every request asks for JSON, with `headers` besides."""
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"{peer} URL must start with http:// or https://, got {base_url!r}"
            )
        if not credential:
            raise ConfigurationError(f"{peer} {credential_name} is empty")
        settings = {"timeout": timeout, **(positive or {})}
        if any(value <= 0 for value in settings.values()):
            raise ValueError(f"{' and '.join(settings)} must be positive")
        register_secret(secret, permanent=True)
        self._base_url = self._root(base_url)
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=timeout,
            headers={**(headers or {}), "Accept": "application/json"},
            transport=StreamTransport() if usable_for(self._base_url) else None,
        )

    def _root(self, base_url: str) -> str:
        """The URL the request paths are relative to."""
        return base_url.rstrip("/")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
