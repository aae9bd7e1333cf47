"""The status listener's bearer token, read once at start from `status.token_file`.

Students are local users: a token file they can read, or change, or that one of them
owns, protects nothing, so wodmail refuses to start on one (a one-line reason says why).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from wodmail.errors import ConfigurationError
from wodmail.logs import register_secret

MIN_CHARS = 16
_MAX_BYTES = 4096
_VISIBLE = re.compile(r"[!-~]+")  # printable ASCII, no space


class TokenFileError(ConfigurationError):
    """`status.token_file` cannot be used; `problem` says why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"status.token_file {path}: {problem}")
        self.path = path
        self.problem = problem


def read_token(path: Path) -> str:
    """The token in `path` (one line of at least MIN_CHARS visible ASCII characters), from
    a regular file owned by root or by wodmail's own user, that neither its group may change
    nor others read or change. TokenFileError naming the file and the problem."""
    try:
        # Not blocking on a FIFO someone put there: it is refused below as not a file.
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TokenFileError(path, f"cannot open it: {exc.strerror or exc}") from None
    try:
        problem = unsafe(os.fstat(fd))
        if problem:
            raise TokenFileError(path, problem)
        data = os.read(fd, _MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        token = _token(data)
    except ValueError as exc:
        raise TokenFileError(path, str(exc)) from None
    register_secret(token, permanent=True)
    return token


def unsafe(info: os.stat_result) -> str | None:
    """Why a file with this status cannot hold a secret from the other local users."""
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if mode & 0o006:
        return (f"readable or writable by others (mode {mode:04o}): chmod o-rwx it "
                "(0600, or 0640 for a group that must read it)")
    if mode & 0o020:
        return f"writable by its group (mode {mode:04o}): chmod g-w it"
    owners = {0, os.geteuid()}
    if info.st_uid not in owners:
        return (f"owned by uid {info.st_uid}, neither root nor wodmail's own user "
                f"(uid {os.geteuid()}): its owner can read and change it")
    return None


def _token(data: bytes) -> str:
    if len(data) > _MAX_BYTES:
        raise ValueError(f"larger than {_MAX_BYTES} bytes: not a token")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError("not ASCII text") from None
    if not text:
        raise ValueError("empty (e.g. openssl rand -hex 32 > FILE)")
    if not _VISIBLE.fullmatch(text):
        raise ValueError("the token is not one word of printable ASCII (no spaces, no lines)")
    if len(text) < MIN_CHARS:
        raise ValueError(f"the token has {len(text)} characters; use at least {MIN_CHARS} "
                         "(e.g. openssl rand -hex 32 > FILE)")
    return text
