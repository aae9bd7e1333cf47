"""The ledger of ssh keys handed out: a key's fingerprint is never handed out twice.

The key pool's folder is not proof that a key is unused: a copy of a key file (a restored
backup, a stray `cp`) would give two students one key. So the pool records the fingerprint
(SHA-256 of the public key) of every key it takes from its folder before handing it out,
and drops a key whose fingerprint it has handed out before. The newest `LIMIT`
fingerprints are kept, in a file of the state dir (one hex fingerprint a line, appended and
fsynced per key, compacted when it holds twice as many), so a restart keeps them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from hashlib import sha256
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wodmail.safefiles import UnsafeFile, open_file, read_all

log = structlog.get_logger(__name__)

LIMIT = 4096
_LINE = 65  # 64 hex digits and a newline


def fingerprint(key: rsa.RSAPrivateKey) -> str:
    """SHA-256 of the public key (SubjectPublicKeyInfo, DER), in hex."""
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha256(public).hexdigest()


class KeyLedger:
    """Fingerprints handed out, the newest `limit` of them; `path` None: in memory only."""

    def __init__(self, path: Path | None, limit: int = LIMIT) -> None:
        self.path = path
        self.limit = limit
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lines = 0
        self._lock = threading.Lock()
        if path is not None:
            self._load(path)

    def claim(self, digest: str) -> bool:
        """Records fingerprint `digest` as handed out; False when it was before."""
        with self._lock:
            if digest in self._seen:
                return False
            self._seen[digest] = None
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
            self._append(digest)
            return True

    def __len__(self) -> int:
        return len(self._seen)

    def _load(self, path: Path) -> None:
        try:
            fd = open_file(path, follow=False)
        except FileNotFoundError:
            return
        except (OSError, UnsafeFile) as exc:
            log.error("ssh key ledger unreadable; starting a new one", file=str(path),
                      error=str(exc))
            return
        try:
            text = read_all(fd, 2 * self.limit * _LINE + _LINE, path).decode("ascii", "replace")
        except UnsafeFile:
            text = ""  # grown beyond what we ever write: start over rather than trust it
        finally:
            os.close(fd)
        lines = text.split()
        for line in lines[-self.limit:]:
            self._seen[line] = None
        self._lines = len(lines)

    def _append(self, digest: str) -> None:
        if self.path is None:
            return
        if self._lines >= 2 * self.limit:
            self._rewrite(self.path)
            return
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o600)
            try:
                os.write(fd, f"{digest}\n".encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("ssh key ledger not written: a restart may forget this key",
                      file=str(self.path), error=str(exc))
            return
        self._lines += 1

    def _rewrite(self, path: Path) -> None:
        """The newest `limit` fingerprints only, atomically."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as stream:
                stream.write("".join(f"{line}\n" for line in self._seen))
                stream.flush()
                os.fsync(stream.fileno())
            os.rename(tmp, path)
        except OSError as exc:
            log.error("ssh key ledger not compacted", file=str(path), error=str(exc))
            return
        self._lines = len(self._seen)
