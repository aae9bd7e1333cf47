"""Logging: one JSON line per event on stderr (journald-friendly), secrets masked.

Two layers keep secrets out of the logs: values under secret-looking keys are replaced,
and every string registered with `register_secret` (the portal password, the hub token,
each generated student password) is scrubbed from any value that would be printed.
At debug verbosity nothing changes: secrets stay masked there too.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are masked by key only: masking them everywhere would garble the logs."""
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

# Student passwords are many and short-lived: the most recent ones are kept, so scrubbing
# stays cheap on a daemon that runs for weeks. Configured secrets stay for good.
RECENT_SECRETS = 512
PENDING_SECRETS = 64
"""Secrets registered since the pattern was compiled, looked for with `in` until there are
this many (compiling an alternation of ~500 secrets costs ~6 ms: not once per order)."""
_permanent: set[str] = set()
_recent: OrderedDict[str, None] = OrderedDict()
# The compiled pattern lags behind the registered secrets: it lacks those in `_pending` and
# may still hold evicted ones. `_scrub` recompiles before using it whenever the difference
# could matter (a pending secret is in the value, or an evicted one matched), so what is
# masked is always exactly what a pattern of the current secrets masks.
_pattern: re.Pattern[str] | None = None
_pending: list[str] = []
_secrets_lock = threading.Lock()


def register_secret(value: str | None, *, permanent: bool = False) -> None:
    """Scrub `value` from every log line from now on (short values are masked by key only)."""
    global _pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if permanent:
            _permanent.add(value)
        else:
            _recent[value] = None
            _recent.move_to_end(value)
            while len(_recent) > RECENT_SECRETS:
                _recent.popitem(last=False)
        _pending.append(value)
        if len(_pending) > PENDING_SECRETS:
            _pattern = None


def _compile() -> re.Pattern[str] | None:
    """The pattern of exactly the current secrets (the lock held)."""
    global _pattern
    _pending.clear()
    secrets = sorted({*_permanent, *_recent}, key=len, reverse=True)
    _pattern = re.compile("|".join(map(re.escape, secrets))) if secrets else None
    return _pattern


def _live(secret: str) -> bool:
    return secret in _recent or secret in _permanent


def _scrub_text(value: str) -> str:
    pattern = _pattern
    if pattern is None or any(secret in value for secret in _pending):
        pattern = _compile()
        return pattern.sub(MASK, value) if pattern is not None else value
    evicted = False

    def mask(match: re.Match[str]) -> str:
        nonlocal evicted
        if _live(match.group()):
            return MASK
        evicted = True
        return match.group()

    scrubbed = pattern.sub(mask, value)
    if not evicted:
        return scrubbed
    pattern = _compile()  # an evicted secret matched: it may hide a live one inside it
    return pattern.sub(MASK, value) if pattern is not None else value


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: (MASK if _is_secret_key(k) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def scrub_text(text: str) -> str:
    """`text` with every registered secret masked (hook output kept in the journal)."""
    with _secrets_lock:
        return str(_scrub(text))


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


def configure_logging(
    verbosity: int = 0, *, stream: Any = None, quiet_level: int = logging.INFO
) -> None:
    """JSON lines on stderr; verbosity 0 logs from `quiet_level` up (the daemon: info; admin
    commands, which report on their own: warnings or nothing), 1+ = debug."""
    level = logging.DEBUG if verbosity > 0 else quiet_level
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
