"""RSA key pairs made ahead of time, so a CREATE does not wait ~160 ms of CPU for one.

A key is only randomness until it is written into a student's home, so a background
thread fills a pool while the backend is idle (keygen releases the GIL: the event loop
keeps running). When a burst of CREATEs empties the pool, keys are generated inline and the
pool refills afterwards.

The pool survives restarts: each key made ahead is also kept as a PEM file in `folder`
(the state dir's `keys/`, 0700, files 0600, as private as the journal), so a fresh process
on an existing state dir starts with a full pool, as fast as one that ran all night. A key
is handed out once: its file is removed before the key is used; a file that cannot be
read back (torn by a crash) is dropped.
"""

from __future__ import annotations

import collections
import os
import secrets
import threading
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = structlog.get_logger(__name__)

SUFFIX = ".pem"


def generate_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


class KeyPool:
    def __init__(self, size: int, bits: int = 3072, folder: Path | None = None) -> None:
        self.size = size
        self.bits = bits
        self.folder = folder
        # Keys ready to hand out: (file, key), the key None until read back from its file.
        self._keys: collections.deque[tuple[Path | None, rsa.RSAPrivateKey | None]]
        self._keys = collections.deque()
        self._wanted = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.size <= 0 or self._thread is not None:
            return
        self._load_stored()
        self._wanted.set()
        self._thread = threading.Thread(target=self._fill, name="wodmail-keypool", daemon=True)
        self._thread.start()

    def _load_stored(self) -> None:
        """Takes the keys an earlier process left (only their names: read at `take`)."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        for leftover in self.folder.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        stored = sorted(self.folder.glob("*" + SUFFIX))
        self._keys.extend((path, None) for path in stored)
        if stored:
            log.info("ssh key pool loaded from disk", keys=len(stored), folder=str(self.folder))

    def _fill(self) -> None:
        try:
            # Refilling must never compete with orders for the CPU (2 cores at an event).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while not self._stopped:
            self._wanted.wait()
            while not self._stopped and len(self._keys) < self.size:
                key = generate_key(self.bits)
                self._keys.append((self._store(key), key))
            self._wanted.clear()

    def _store(self, key: rsa.RSAPrivateKey) -> Path | None:
        """Writes `key` to the pool's folder (atomically); None when there is no folder or
        the write fails (the key then lives only in memory, as before)."""
        if self.folder is None:
            return None
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        name = secrets.token_hex(8)
        tmp = self.folder / f"{name}.tmp"
        path = self.folder / f"{name}{SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, path)
        except OSError as exc:
            log.warning("ssh key not kept on disk", folder=str(self.folder), error=str(exc))
            tmp.unlink(missing_ok=True)
            return None
        return path

    def take(self) -> rsa.RSAPrivateKey:
        """A pooled key if there is one, else a fresh one made now."""
        key = None
        while key is None:
            try:
                path, key = self._keys.popleft()
            except IndexError:
                key = generate_key(self.bits)
                break
            if path is not None:
                key = self._claim(path, key)
        self._wanted.set()
        return key

    def _claim(self, path: Path, key: rsa.RSAPrivateKey | None) -> rsa.RSAPrivateKey | None:
        """Removes the key's file (it is handed out once) and returns the key, read from the
        file if need be; None for a file that is unreadable or not of the configured size."""
        try:
            data = path.read_bytes() if key is None else b""
            path.unlink()
        except OSError as exc:
            log.warning("pooled ssh key unusable", file=str(path), error=str(exc))
            return None
        if key is not None:
            return key
        try:
            loaded = serialization.load_pem_private_key(
                data, None, unsafe_skip_rsa_key_validation=True  # our own file, made by us
            )
        except (ValueError, TypeError) as exc:
            log.warning("pooled ssh key unreadable; dropped", file=str(path), error=str(exc))
            return None
        if not isinstance(loaded, rsa.RSAPrivateKey) or loaded.key_size != self.bits:
            return None
        return loaded

    def __len__(self) -> int:
        return len(self._keys)

    def stop(self) -> None:
        self._stopped = True
        self._wanted.set()
