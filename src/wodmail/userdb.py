"""The user database of a root: names to uids, gids and homes, from etc/passwd and etc/group.

`root` is the file-system root that holds etc/passwd and etc/group: `/` in production, a
sandbox directory in tests. Reading the installation (facts, WODUSER), the hooks (who a
script runs as) and the accounts all use it, so it sits below all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wodmail.errors import AccountError

__all__ = ["SYSTEM_ROOT", "PasswdEntry", "UserDb"]

SYSTEM_ROOT = Path("/")


@dataclass(frozen=True)
class PasswdEntry:
    """One line of etc/passwd, the fields wodmail uses."""

    name: str
    uid: int
    gid: int
    home: Path
    shell: str = "/bin/sh"


class UserDb:
    """Names to numeric ids, read from `<root>/etc/passwd` and `<root>/etc/group`.

    The files are read on every lookup: they are small and may change under us.
    """

    def __init__(self, root: Path = SYSTEM_ROOT) -> None:
        self.root = Path(root)
        self.passwd_file = self.root / "etc" / "passwd"
        self.group_file = self.root / "etc" / "group"

    def user(self, name: str) -> PasswdEntry:
        found = _first_by_name(self.passwd_file).get(name)
        if found is None:
            raise AccountError(f"no user {name} in {self.passwd_file}")
        line_no, fields = found
        if len(fields) < 7:
            raise AccountError(f"{self.passwd_file} line {line_no}: too few fields")
        uid = _id_field(fields[2], "uid", self.passwd_file, line_no)
        gid = _id_field(fields[3], "gid", self.passwd_file, line_no)
        home, shell = Path(fields[5]), fields[6].strip() or "/bin/sh"
        return PasswdEntry(name=name, uid=uid, gid=gid, home=home, shell=shell)

    def uid(self, name: str) -> int:
        return self.user(name).uid

    def groups_of(self, name: str) -> list[int]:
        """The gids of the groups listing `name` as a member (supplementary groups)."""
        gids = []
        for line_no, fields in _records(self.group_file):
            if len(fields) >= 4 and name in fields[3].strip().split(","):
                gids.append(_id_field(fields[2], "gid", self.group_file, line_no))
        return gids

    def gid(self, group: str) -> int:
        for line_no, fields in _records(self.group_file):
            if fields[0] == group:
                if len(fields) < 3:
                    raise AccountError(f"{self.group_file} line {line_no}: too few fields")
                return _id_field(fields[2], "gid", self.group_file, line_no)
        raise AccountError(f"no group {group} in {self.group_file}")


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    for line_no, line in enumerate(_read(path).splitlines(), start=1):
        if line.strip() and not line.startswith(("#", "+", "-")):
            yield line_no, line.split(":")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AccountError(f"cannot read {path}: {exc.strerror}") from exc


# The file is still read on every lookup (it may change under us); only its parse is kept,
# for as long as the text read is the same (a CREATE looks up 3 names in a passwd of
# hundreds of students).
_parsed: dict[Path, tuple[str, dict[str, tuple[int, list[str]]]]] = {}
_parsed_lock = threading.Lock()


def _first_by_name(path: Path) -> dict[str, tuple[int, list[str]]]:
    """Each name's first record in `path`: (line number, fields)."""
    text = _read(path)
    with _parsed_lock:
        cached = _parsed.get(path)
    if cached is not None and cached[0] == text:
        return cached[1]
    by_name: dict[str, tuple[int, list[str]]] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.startswith(("#", "+", "-")):
            fields = line.split(":")
            by_name.setdefault(fields[0], (line_no, fields))
    with _parsed_lock:
        if len(_parsed) >= 16 and path not in _parsed:  # a root or two in production
            _parsed.clear()
        _parsed[path] = (text, by_name)
    return by_name


def _id_field(text: str, what: str, path: Path, line_no: int) -> int:
    if not text.isdigit():
        raise AccountError(f"{path} line {line_no}: {what} {text!r} is not a number")
    return int(text)
