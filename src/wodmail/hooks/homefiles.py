"""Files a hook writes into the student's home on the backend (`~/.ssh/config`, a token).

The home belongs to the student, who may have planted links in it: every folder on the way
is opened without following a link (`O_NOFOLLOW`, relative to the folder before), created
0700 when missing, and the file is written aside then renamed into place, all through
those descriptors, then given to the home's owner. A link, a fifo or another odd file on
the way fails the hook with `AccountError`, nothing written.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from wodmail.errors import AccountError
from wodmail.hooks.context import HookContext

MAX_READ_BYTES = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_home_file(ctx: HookContext, relative: str, text: str | bytes, *,
                    mode: int = 0o600) -> Path:
    """Replace HOME/`relative` with `text`, owned by the home's owner, with `mode`."""
    home, parts = _split(ctx, relative)
    data = text.encode("utf-8") if isinstance(text, str) else text
    with _folder(home, parts[:-1], create=True) as (fd, owner):
        staged = f".{parts[-1]}.wodmail-{secrets.token_hex(4)}"
        out = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, mode, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as stream:
                stream.write(data)
                os.fchmod(stream.fileno(), mode)
                os.fchown(stream.fileno(), owner.st_uid, owner.st_gid)
            os.replace(staged, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            os.unlink(staged, dir_fd=fd)
            raise
    return home.joinpath(*parts)


def read_home_file(ctx: HookContext, relative: str) -> str:
    """HOME/`relative` as text ("" when it does not exist), read without following links."""
    home, parts = _split(ctx, relative)
    try:
        with _folder(home, parts[:-1], create=False) as (fd, _):
            try:
                file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                                  | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                return ""
            with os.fdopen(file_fd, "rb") as stream:
                if not stat.S_ISREG(os.fstat(file_fd).st_mode):
                    raise AccountError(f"{home.joinpath(*parts)} is not a regular file")
                return stream.read(MAX_READ_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise AccountError(f"{home.joinpath(*parts)} cannot be read safely: {exc}") from exc


def _split(ctx: HookContext, relative: str) -> tuple[Path, tuple[str, ...]]:
    if ctx.home is None:
        raise AccountError(f"{ctx.workshop}: this hook run has no student home")
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"{relative!r}: a path inside the home is expected")
    return ctx.home, parts


@contextmanager
def _folder(home: Path, parts: tuple[str, ...], *, create: bool
            ) -> Iterator[tuple[int, os.stat_result]]:
    try:
        fd = os.open(home, _DIR_FLAGS)
    except OSError as exc:
        raise AccountError(f"{home} is not a plain folder (a link?): {exc.strerror}") from exc
    try:
        owner = os.fstat(fd)
        for part in parts:
            child = _child(fd, part, owner, create, home)
            os.close(fd)
            fd = child
        yield fd, owner
    finally:
        os.close(fd)


def _child(fd: int, part: str, owner: os.stat_result, create: bool, home: Path) -> int:
    if create:
        try:
            os.mkdir(part, 0o700, dir_fd=fd)
            os.chown(part, owner.st_uid, owner.st_gid, dir_fd=fd, follow_symlinks=False)
        except FileExistsError:
            pass
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not create:
            raise
        raise AccountError(f"{home}/.../{part} is not a plain folder (a link?): "
                           f"refusing to write through it") from exc


def write_ssh_config_block(ctx: HookContext, owner: str, entries: str) -> None:
    """Put `entries` (ssh config lines, e.g. `Host 10.0.0.7` / `    Port 14101`) first in
    HOME/.ssh/config, between marker comments naming `owner` (a workshop), replacing that
    owner's earlier block and keeping every other line. First, as ssh takes the first value
    it finds for each option; closed by `Host *`, so options that followed at the top of the
    file still apply to every host."""
    begin, end = f"# BEGIN wodmail {owner}", f"# END wodmail {owner}"
    old = re.compile(rf"^{re.escape(begin)}\n.*?^{re.escape(end)}\n\n?", re.M | re.S)
    block = (f"{begin}\n# Written by wodmail at each CREATE of {owner}: edits here are lost.\n"
             f"{entries}Host *\n{end}\n")
    others = old.sub("", read_home_file(ctx, ".ssh/config"))
    write_home_file(ctx, ".ssh/config", block + ("\n" + others if others.strip() else ""))
