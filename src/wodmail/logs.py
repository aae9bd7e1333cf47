"""Logging: one JSON line per event on stderr (journald-friendly), secrets masked.

Two layers keep secrets out of the logs: values under secret-looking keys are replaced,
and every string registered with `register_secret` (the portal password, the hub token,
each generated student password) is scrubbed from any value that would be printed.
At debug verbosity nothing changes: secrets stay masked there too.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

MASK = "***"
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "token",
        "accesstoken",
        "access_token",
        "x-access-token",
        "authorization",
        "randompw",
        "passstu",
        "secret",
    }
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Scrub `value` from every log line from now on (short values are masked by key only)."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: (MASK if _is_secret_key(k) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: masks secret keys and scrubs registered secret values."""
    with _secrets_lock:
        for key in list(event_dict):
            value = event_dict[key]
            event_dict[key] = MASK if _is_secret_key(key) and value else _scrub(value)
    return event_dict


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time (it may be replaced after configuring)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(verbosity: int = 0, *, stream: Any = None) -> None:
    """JSON lines on stderr; verbosity 0 = info, 1+ = debug."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    processors: Iterable[Any] = (
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_secrets,
        structlog.processors.JSONRenderer(),
    )
    # aiosmtpd logs every connection at INFO on stdlib's "mail.log"; our own events suffice.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    structlog.configure(
        processors=list(processors),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or _CurrentStderr()),
        cache_logger_on_first_use=False,
    )
