"""A file's POSIX access ACL, read and rewritten in-process through its extended attribute.

With an extended ACL (named user or group entries, as the WoD installer gives WODUSER on
each home), the mode's group bits are the ACL's mask, not the owning group's rights: a
`chmod g-w` lowers the mask and takes write access from every named entry. Code that
changes a home's mode reads the ACL first and rewrites it whole instead (`set_access_acl`),
so the mask stays what it must be.

The attribute's format is the kernel's (`posix_acl_xattr`): a little-endian u32 version (2),
then one (u16 tag, u16 permissions, u32 id) entry per line of `getfacl`.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

ACCESS_ATTRIBUTE = "system.posix_acl_access"
_VERSION = 2
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
# No extended ACL (ENODATA), or a file system without ACLs.
_NO_ACL = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass(frozen=True)
class AclEntry:
    tag: int
    perms: int  # rwx as 0o4 | 0o2 | 0o1
    id: int = _UNDEFINED_ID


@dataclass(frozen=True)
class AccessAcl:
    """An extended access ACL (one with a mask)."""

    entries: tuple[AclEntry, ...]

    def perms(self, tag: int) -> int | None:
        found = [entry.perms for entry in self.entries if entry.tag == tag]
        return found[0] if found else None

    @property
    def mask(self) -> int | None:
        return self.perms(MASK)

    def with_perms(self, tag: int, perms: int) -> AccessAcl:
        """The same ACL with the single entry `tag` (MASK, OTHER ...) set to `perms`."""
        entries = tuple(replace(e, perms=perms) if e.tag == tag else e for e in self.entries)
        return AccessAcl(entries)

    def to_bytes(self) -> bytes:
        body = b"".join(_ENTRY.pack(e.tag, e.perms, e.id) for e in self.entries)
        return _HEADER.pack(_VERSION) + body


def perms_text(perms: int) -> str:
    """`rwx`, `r-x` ... as getfacl writes them."""
    bits = zip("rwx", (0o4, 0o2, 0o1), strict=True)
    return "".join(letter if perms & bit else "-" for letter, bit in bits)


def read_access_acl(path: Path) -> AccessAcl | None:
    """The extended access ACL of `path` (not following a symlink), or None when it has
    none (its mode says it all) or its file system has no ACLs."""
    try:
        data = os.getxattr(path, ACCESS_ATTRIBUTE, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_ACL:
            return None
        raise
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
        raise OSError(errno.EINVAL, f"unreadable ACL of {len(data)} bytes", str(path))
    entries = tuple(
        AclEntry(*_ENTRY.unpack_from(data, offset))
        for offset in range(_HEADER.size, len(data), _ENTRY.size)
    )
    acl = AccessAcl(entries)
    return acl if acl.mask is not None else None


def set_access_acl(path: Path, acl: AccessAcl) -> None:
    """Replace the access ACL of `path` (its mode's permission bits follow: owner, mask as
    group, other)."""
    os.setxattr(path, ACCESS_ATTRIBUTE, acl.to_bytes(), follow_symlinks=False)
