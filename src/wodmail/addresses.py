"""Mail addresses as the allow-lists read them: the envelope's, and the one of a From header.

The order intake and the relay compare senders the same way: lower case, the null sender
`<>` never allowed, and a From header's address is the one in `<...>` whatever the display
name says (`allowed@x <evil@y>` is evil@y).
"""

from __future__ import annotations

import re

from wodmail.orders import shown

HEADER_MAX = 998  # RFC 5322 line limit: a longer From is no sender's; stay cheap
_ANGLE_ADDR = re.compile(r"<([^<>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")
_ADDR_SPEC = re.compile(r"[^\s<>()\[\],;:@\"\\]+@[^\s<>()\[\],;:@\"\\]+")


class AddressError(ValueError):
    """A From header that is not exactly one address; the message says why."""


def envelope_address(value: str | None) -> str | None:
    """MAIL FROM (or an already parsed address) as the allow-lists compare it: lower case;
    None for the null sender `<>`."""
    if not value:
        return None
    return value.strip().strip("<>").strip().lower() or None


def from_address(raw: str, header: str = "From") -> str:
    """The one address of a From header's value (unfolded): the angle-addr if there is one,
    else the bare addr-spec, as written (not lower-cased). AddressError if there is none or
    more than one; `header` names the header in its message (Sender ...)."""
    text = raw[:HEADER_MAX]
    angled = _ANGLE_ADDR.findall(text)
    if len(angled) > 1:
        raise AddressError(f"{header} header holds more than one address: {shown(raw)}")
    candidate = angled[0].strip() if angled else _COMMENT.sub(" ", text).strip()
    if not _ADDR_SPEC.fullmatch(candidate):
        raise AddressError(f"{header} header is not one address: {shown(raw)}")
    return candidate
