"""Random student passwords."""

from __future__ import annotations

import secrets
import string

# Letters and digits without the look-alikes (l, I, O, 0, 1): students type these by hand.
DEFAULT_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "lIO01")


def generate_password(length: int = 16, alphabet: str = DEFAULT_ALPHABET) -> str:
    """A password of `length` characters drawn uniformly from `alphabet` with `secrets`.

    The alphabet must hold at least two distinct printable, non-space characters: the
    password goes through `chpasswd` (one `user:password` line) and LDAP unchanged.
    """
    if length < 1:
        raise ValueError(f"password length must be at least 1, not {length}")
    symbols = "".join(dict.fromkeys(alphabet))  # drop repeats: they would bias the draw
    unfit = sorted({c for c in symbols if not c.isprintable() or c.isspace()})
    if unfit:
        raise ValueError(f"password alphabet holds blank or control characters: {unfit!r}")
    if len(symbols) < 2:
        raise ValueError(f"password alphabet needs at least 2 distinct characters: {alphabet!r}")
    return "".join(secrets.choice(symbols) for _ in range(length))
