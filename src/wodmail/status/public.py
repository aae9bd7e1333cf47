"""What the status listener shows of an order: `wodmail jobs --json`'s fields, less what a
student on the backend must not read.

- No hook output (every `output` in the result): a script can print a secret in any form
  (reversed, base64...) that no scrubbing recognises. It stays in the journal, for
  `wodmail show`, which needs the journal's file permissions.
- E-mail addresses masked, wherever they appear (`email`, the subject, senders, reasons):
  `jane@example.com` becomes `j***@example.com`.
- Secrets the daemon knows (tokens, passwords) masked, as in the logs, in the texts where
  wodmail writes what went wrong (reasons, errors, warnings). Scrubbing every string costs
  too much for a page of 1000 orders, and the others come from the mail or from wodmail.
"""

from __future__ import annotations

import re
from typing import Any

from wodmail.journal.jobs import Job
from wodmail.logs import scrub_text

# The local part of an address: what precedes `@` up to a space or a delimiter.
_LOCAL_PART = re.compile(r"""([^\s@<>()\[\]",;:'\\])[^\s@<>()\[\]",;:'\\]*@""")
_HIDDEN_KEYS = frozenset({"output"})
_VERBATIM_KEYS = frozenset({"message_id", "received_at", "started_at", "finished_at"})
_SCRUBBED_KEYS = frozenset({"reason", "error", "last_error", "warnings", "summary", "detail"})


def public_job(job: Job) -> dict[str, Any]:
    """The JSON of `wodmail jobs --json` for `job`, as the status listener may show it."""
    data = job.to_public()
    shown: dict[str, Any] = {}
    for key, value in data.items():
        if key == "email" and isinstance(value, str):
            shown[key] = mask_address(value)
        else:
            shown[key] = value if key in _VERBATIM_KEYS else _clean(value, key in _SCRUBBED_KEYS)
    return shown


def mask_address(address: str) -> str:
    """`jane@example.com` -> `j***@example.com` (any text without `@`: its first character)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return f"{address[:1]}***" if address else address
    return f"{local[:1]}***@{domain}"


def mask_addresses(text: str) -> str:
    """`text` with the local part of every e-mail address in it masked."""
    return _LOCAL_PART.sub(r"\1***@", text) if "@" in text else text


def _clean(value: Any, scrub: bool = False) -> Any:
    if isinstance(value, str):
        return mask_addresses(scrub_text(value) if scrub else value)
    if isinstance(value, dict):
        return {k: _clean(v, scrub or k in _SCRUBBED_KEYS)
                for k, v in value.items() if k not in _HIDDEN_KEYS}
    if isinstance(value, list):
        return [_clean(item, scrub) for item in value]
    return value
