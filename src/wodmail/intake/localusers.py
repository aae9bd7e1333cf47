"""The local users allowed to send orders (`listen.local_users`), as uids.

Entries are user names or uids. Names are looked up in this host's user database (the
kernel reports the uid of a socket's owner, so the names must be this host's, whatever
`accounts.root` says). Unset, the list is root, the installation's WODUSER
(`accounts.admin_user`) and the user wodmail runs as, which is how the admin tool, the
admins' own scripts and wodmail's own checks reach it.
"""

from __future__ import annotations

import functools
import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalUsers:
    uids: frozenset[int]
    shown: tuple[str, ...]  # each entry as resolved, for logs and check-config
    unknown: tuple[str, ...]  # names this host does not have (left out)
    explicit: bool = True  # listen.local_users was set (else: the default)

    def allows(self, uid: int) -> bool:
        return uid in self.uids


def default_entries(admin_user: str | None) -> list[str | int]:
    """root, WODUSER (if set) and wodmail's own user."""
    entries: list[str | int] = ["root"]
    if admin_user:
        entries.append(admin_user)
    entries.append(os.geteuid())
    return entries


def resolve(entries: list[str | int] | None, admin_user: str | None) -> LocalUsers:
    """`listen.local_users` (None: the default) as uids; unknown names are left out."""
    explicit = entries is not None
    wanted = entries if entries is not None else default_entries(admin_user)
    uids: set[int] = set()
    shown: list[str] = []
    unknown: list[str] = []
    for entry in wanted:
        uid = _uid_of(entry)
        if uid is None:
            unknown.append(str(entry))
            continue
        uids.add(uid)
        shown.append(label(uid))
    return LocalUsers(frozenset(uids), tuple(dict.fromkeys(shown)), tuple(unknown), explicit)


def _uid_of(entry: str | int) -> int | None:
    if isinstance(entry, int):
        return entry
    if entry.isdigit():
        return int(entry)
    try:
        return pwd.getpwnam(entry).pw_uid
    except KeyError:
        return None


def label(uid: int) -> str:
    """`uid 1005 (student5)`, or `uid 1005` for a uid without a name."""
    name = user_name(uid)
    return f"uid {uid} ({name})" if name else f"uid {uid}"


@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    # Cached: refused connections from one uid come in bursts, and names rarely change.
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
