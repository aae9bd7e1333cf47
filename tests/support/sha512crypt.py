"""Checks a SHA-512-crypt (`$6$`) hash, as chpasswd writes it, with `openssl passwd -6`.

The `crypt` module is gone from Python 3.13; OpenSSL's implementation of the same scheme is
on every Debian machine (scripts/system-deps.sh installs it), so the tests verify hashes
with it instead of carrying their own copy of the algorithm.
"""

from __future__ import annotations

import shutil
import subprocess


def sha512_crypt_matches(password: str, hashed: str) -> bool:
    """Does `hashed` (a `$6$salt$...` shadow field) hash `password`?"""
    parts = hashed.split("$")
    if len(parts) != 4 or parts[1] != "6":
        # `$6$rounds=N$salt$hash` is not produced with Debian's default login.defs, and
        # `openssl passwd` cannot take a rounds count: say so rather than answer wrongly.
        raise AssertionError(f"not a default-rounds SHA-512-crypt hash: {hashed[:12]}...")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError("openssl is missing (scripts/system-deps.sh installs it)")
    done = subprocess.run(
        [openssl, "passwd", "-6", "-salt", parts[2], "-stdin"],
        input=password, capture_output=True, text=True, check=True, timeout=30,
    )
    return done.stdout.strip() == hashed
