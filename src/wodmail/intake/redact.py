"""What the journal keeps of a refused mail that is not an order: a few headers, no body.

The portal sends participants' welcome and credentials mails (with their password) to the
same port when it has no SendGrid key. Such a mail is refused and recorded like any other,
but only From, To, Subject, Message-ID and Date are kept, plus its size: its text never
reaches the disk (`wodmail show --raw` shows these lines only).
"""

from __future__ import annotations

from wodmail.intake.parse import split_head_body

KEPT_HEADERS = (b"from", b"to", b"subject", b"message-id", b"date")
BODY_NOTE = "X-Wodmail-Body"


def headers_only(data: bytes, recipients: list[str] | None = None) -> bytes:
    """The kept header lines of `data` (folded lines included) and a note with its size;
    the envelope recipients stand in for a missing To header."""
    head, _body = split_head_body(data)
    kept: list[bytes] = []
    keeping = False
    for line in head:
        if line[:1] in (b" ", b"\t"):
            if keeping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        keeping = name in KEPT_HEADERS
        if keeping:
            kept.append(line)
    if recipients and not any(line[:3].lower() == b"to:" for line in kept):
        kept.append(b"To: " + ", ".join(recipients).encode("utf-8", "replace"))
    note = f"{BODY_NOTE}: not stored, not an order ({len(data)} bytes received)"
    kept.append(note.encode("ascii"))
    return b"\n".join(kept) + b"\n"
