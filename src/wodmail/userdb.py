"""The user database of a root: names to uids, gids and homes, from etc/passwd and etc/group.

`root` is the file-system root that holds etc/passwd and etc/group: `/` in production, a
sandbox directory in tests. Reading the installation (facts, WODUSER), the hooks (who a
script runs as) and the accounts all use it, so it sits below all of them.
"""

from __future__ import annotations

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
        for line_no, fields in _records(self.passwd_file):
            if fields[0] == name:
                if len(fields) < 7:
                    raise AccountError(f"{self.passwd_file} line {line_no}: too few fields")
                uid = _id_field(fields[2], "uid", self.passwd_file, line_no)
                gid = _id_field(fields[3], "gid", self.passwd_file, line_no)
                home, shell = Path(fields[5]), fields[6].strip() or "/bin/sh"
                return PasswdEntry(name=name, uid=uid, gid=gid, home=home, shell=shell)
        raise AccountError(f"no user {name} in {self.passwd_file}")

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
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AccountError(f"cannot read {path}: {exc.strerror}") from exc
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.startswith(("#", "+", "-")):
            yield line_no, line.split(":")


def _id_field(text: str, what: str, path: Path, line_no: int) -> int:
    if not text.isdigit():
        raise AccountError(f"{path} line {line_no}: {what} {text!r} is not a number")
    return int(text)
