"""Files wodmail (root) reads, sources or runs although someone else may control them.

Such a file is opened once, without following a final symbolic link where a less
privileged user controls the path, and checked on that descriptor: a regular file (not a
fifo or a device), owned by whom it must be, not writable by group or others. It is then
used through that descriptor only, so the file checked is the file used: a swap after the
check changes nothing. Every refusal is an `UnsafeFile` naming the file, its owner and mode.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from wodmail.errors import ConfigurationError

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a fifo", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


class UnsafeFile(ConfigurationError):
    """A file refused because someone other than its trusted owners could control it."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = Path(path)
        self.problem = problem


def as_root() -> bool:
    """Whether the checks apply: only root can be tricked into using others' rights."""
    return os.geteuid() == 0


def who(uid: int) -> str:
    """`wodadmin (uid 1001)`, or `uid 1001` for a uid without an account."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def whom(uid: int) -> str:
    """`root`, else `who(uid)`: who a file is sourced, read or run as."""
    return "root" if uid == 0 else who(uid)


def owned(info: os.stat_result) -> str:
    """`owned by wodadmin (uid 1001), mode 0644`."""
    return f"owned by {who(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):04o}"


def open_file(path: Path, *, follow: bool, dir_fd: int | None = None) -> int:
    """A read-only descriptor on `path`; UnsafeFile for a symbolic link (unless `follow`)
    or anything but a regular file. Other failures are OSError (ENOENT: no such file).

    O_NONBLOCK: opening a fifo must not wait for a writer before it can be refused.
    """
    flags = _READ_FLAGS | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise UnsafeFile(path, "is a symbolic link: refused, it is not followed") from None
        raise
    try:
        regular(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def regular(fd: int, path: Path | str) -> os.stat_result:
    """fstat of `fd`; UnsafeFile unless it is a regular file."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise UnsafeFile(path, f"is {kind}, not a regular file: refused")
    return info


def check_owner(
    path: Path | str, info: os.stat_result, *, owners: Collection[int], use: str
) -> None:
    """UnsafeFile unless `info` is owned by one of `owners` and group and others may not
    write it. `use` says what wodmail would do with it: `sourced as root` ..."""
    if info.st_uid not in owners:
        allowed = " or ".join(whom(uid) for uid in sorted(set(owners)))
        raise UnsafeFile(path, f"is {owned(info)}: refused, it would be {use} and must "
                               f"belong to {allowed}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFile(path, f"is {owned(info)}: refused, it would be {use} and group or "
                               "others may write it (chmod go-w)")


@contextmanager
def trusted(
    path: Path, *, owners: Collection[int], use: str, follow: bool = False
) -> Iterator[tuple[int, os.stat_result]]:
    """The descriptor and status of `path` once `check_owner` accepts it; closed after."""
    fd = open_file(path, follow=follow)
    try:
        info = os.fstat(fd)
        check_owner(path, info, owners=owners, use=use)
        yield fd, info
    finally:
        os.close(fd)


def read_all(fd: int, limit: int, path: Path | str) -> bytes:
    """Everything `fd` holds from its start; UnsafeFile when it is over `limit` bytes."""
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            return b"".join(chunks)
        offset += len(chunk)
        if offset > limit:
            raise UnsafeFile(path, f"holds over {limit} bytes: refused")
        chunks.append(chunk)
