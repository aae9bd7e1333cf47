"""The relayed message: its header block as the relay reads it, and the bytes that leave.

`split_message` is the one reading of a relayed mail's header block: the sender check
(`policy`) reads its From headers there and `prepare_message` sends that same block on, so
what is checked is what leaves. No message text is ever logged.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

_SHOWN_MAX = 200
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_LINE_ENDING = re.compile(rb"\r?\n")
# Blind copies: the envelope holds their recipients; the header would show them to everyone.
_STRIPPED = frozenset({b"bcc", b"resent-bcc"})


@dataclass(frozen=True)
class Prepared:
    """The bytes handed to the smarthost, and what the outbox listing shows of them."""

    message: bytes
    subject: str | None
    message_id: str | None


def split_message(raw: bytes) -> tuple[list[bytes], list[bytes]]:
    """Header lines and body lines (line endings dropped). The header block ends at a blank
    line or at the first line that is neither a header (`name:`) nor a folded continuation;
    that line is the first line of the body (the portal writes no blank line)."""
    lines = _LINE_ENDING.split(raw)
    if lines and lines[-1] == b"":
        lines.pop()
    end, blank = _header_end(lines)
    return lines[:end], lines[end + 1 :] if blank else lines[end:]


def _header_end(lines: list[bytes]) -> tuple[int, bool]:
    """Index of the first line after the header block; True if a blank line ends it."""
    for index, line in enumerate(lines):
        if line == b"":
            return index, True
        if line[:1] in (b" ", b"\t") and index > 0:
            continue
        if not _HEADER_LINE.match(line):
            return index, False
    return len(lines), False


def _fields(headers: list[bytes]) -> list[list[bytes]]:
    """The header block as fields: each header line with its folded continuation lines."""
    fields: list[list[bytes]] = []
    for line in headers:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


def _name(field: list[bytes]) -> bytes:
    return field[0].split(b":", 1)[0].strip().lower()


def header_values(headers: list[bytes], name: bytes) -> list[str]:
    """Every header called `name` (any case), unfolded and decoded (UTF-8, errors replaced)."""
    values = []
    for field in _fields(headers):
        if _name(field) == name:
            value = field[0].split(b":", 1)[1] + b"".join(b" " + more.strip() for more in field[1:])
            values.append(value.strip().decode("utf-8", "replace"))
    return values


def _first_value(headers: list[bytes], name: bytes) -> str | None:
    values = header_values(headers, name)
    if not values:
        return None
    return values[0][:_SHOWN_MAX] or None


def _without_blind_copies(headers: list[bytes]) -> list[bytes]:
    return [line for field in _fields(headers) if _name(field) not in _STRIPPED
            for line in field]


def prepare_message(
    raw: bytes,
    *,
    mail_from: str,
    peer: str | None,
    helo: str | None,
    hostname: str,
    received_at: float,
) -> Prepared:
    """What a relaying MTA sends on: CRLF line endings, a Received line, and the From, Date
    and Message-ID the portal's bare mail lacks (it writes only a Subject); the header block
    is ended by a blank line when the client left it out. `Bcc` and `Resent-Bcc` headers are
    removed (the envelope still reaches those recipients); nothing else is changed."""
    headers, body = split_message(raw)
    headers = _without_blind_copies(headers)
    names = {_name(field) for field in _fields(headers)}
    when = format_datetime(datetime.fromtimestamp(received_at, UTC))
    added: list[str] = []
    if b"from" not in names and mail_from:
        added.append(f"From: <{mail_from}>")
    if b"date" not in names:
        added.append(f"Date: {when}")
    message_id = _first_value(headers, b"message-id")
    if b"message-id" not in names:
        message_id = f"<{uuid.uuid4().hex}@{hostname}>"
        added.append(f"Message-ID: {message_id}")
    received = (
        f"Received: from {helo or 'unknown'} ([{peer or 'unknown'}])\r\n"
        f"\tby {hostname} (wodmail) with SMTP; {when}"
    )
    out = [received.encode(), *headers, *(line.encode() for line in added), b"", *body]
    return Prepared(
        message=b"\r\n".join(out) + b"\r\n",
        subject=_first_value(headers, b"subject"),
        message_id=message_id,
    )
