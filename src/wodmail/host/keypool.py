"""RSA key pairs made ahead of time, so a CREATE does not wait ~160 ms of CPU for one.

A key is only randomness until it is written into a student's home, so a background
thread fills a pool while the backend is idle (keygen releases the GIL: the event loop
keeps running). Idle means no key was taken for `QUIET_SECONDS`: during a burst of CREATEs
the pool is drawn down without being refilled, so the burst keeps both cores, and it is
topped up once the burst is over. Only when the pool falls under a tenth of its size does
the thread refill it during the burst (at the lowest priority), so a long run of orders
never empties it; when it is empty anyway, keys are generated inline.

The pool survives restarts: each key made ahead is also kept as a PEM file in `folder`
(the state dir's `keys/`, 0700, files 0600, as private as the journal), so a fresh process
on an existing state dir starts with a full pool, as fast as one that ran all night. A key
is handed out once: its file is removed before the key is used; a file that cannot be
read back (torn by a crash) is dropped.

The folder is trusted for nothing: it must be a real folder of ours (not a symbolic link;
else keys live in memory only); a key file is read through a descriptor opened without
following a link, and only if it is a regular file of ours; anything else in the folder is
dropped with a warning. And since two copies of one key file are two files, the pool keeps
the fingerprints of the keys it handed out (`KeyLedger`, beside the folder) and drops a key
it has handed out before.
"""

from __future__ import annotations

import collections
import math
import os
import secrets
import stat
import threading
import time
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wodmail.host.keyledger import KeyLedger, fingerprint
from wodmail.safefiles import UnsafeFile, open_file, owned, read_all

log = structlog.get_logger(__name__)

SUFFIX = ".pem"
LEDGER = "keys-handed-out"
"""The ledger's file, beside the pool's folder (in the state dir)."""
KEY_FILE_CAP = 64 * 1024
QUIET_SECONDS = 1.0
"""No key taken for this long: the backend is idle, the pool may be topped up."""
LOW_WATER_FRACTION = 0.1
"""Under this fraction of its size the pool is refilled even while keys are being taken."""


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
        self.low_water = max(1, int(size * LOW_WATER_FRACTION))
        self._last_take = -math.inf  # time.monotonic() of the last take
        self._wanted = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.ledger = KeyLedger(folder.parent / LEDGER if folder is not None else None)

    def start(self) -> None:
        if self.size <= 0 or self._thread is not None:
            return
        self._load_stored()
        self._wanted.set()
        self._thread = threading.Thread(target=self._fill, name="wodmail-keypool", daemon=True)
        self._thread.start()

    def _load_stored(self) -> None:
        """Takes the keys an earlier process left (only their names: read at `take`)."""
        if self.folder is None or not self._own_folder(self.folder):
            self.folder = None
            return
        stored = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
                elif entry.name.endswith(SUFFIX) and _plain_file(entry):
                    stored.append(path)
                elif entry.name.endswith(SUFFIX):
                    _drop(path, "not a regular file")
        self._keys.extend((path, None) for path in sorted(stored))
        if stored:
            log.info("ssh key pool loaded from disk", keys=len(stored), folder=str(self.folder))

    @staticmethod
    def _own_folder(folder: Path) -> bool:
        """Makes `folder` (0700); False (logged) unless it is a real folder of ours."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            log.error("ssh key pool folder refused (a symbolic link?): keys kept in memory only",
                      folder=str(folder), error=exc.strerror)
            return False
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                log.error("ssh key pool folder refused: keys kept in memory only",
                          folder=str(folder), why=f"{owned(info)}, not ours")
                return False
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
        return True

    def _fill(self) -> None:
        try:
            # Refilling must never compete with orders for the CPU (2 cores at an event).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while not self._stopped:
            self._wanted.wait()
            self._wanted.clear()  # before looking at the pool: a later take sets it again
            while not self._stopped and len(self._keys) < self.size:
                pause = self.pause_before_refill(time.monotonic())
                if pause > 0:
                    self._wanted.wait(pause)  # woken early by a take, to look again
                    self._wanted.clear()
                    continue
                key = generate_key(self.bits)
                self._keys.append((self._store(key), key))

    def pause_before_refill(self, now: float) -> float:
        """Seconds to wait before making the next key: 0 when the pool is under its low
        water mark or no key was taken for QUIET_SECONDS, else the time left until then."""
        if len(self._keys) < self.low_water:
            return 0.0
        return max(0.0, self._last_take + QUIET_SECONDS - now)

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
        self._last_take = time.monotonic()
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
        file if need be; None for a file that is unreadable, not a regular file of ours, not
        of the configured size, or a key handed out before."""
        if key is None:
            key = self._read(path)
        if key is not None and not self.ledger.claim(fingerprint(key)):
            log.warning("pooled ssh key handed out before (a copy of its file?): dropped",
                        file=str(path))
            key = None
        try:
            path.unlink()
        except OSError as exc:
            log.warning("pooled ssh key unusable", file=str(path), error=str(exc))
            return None
        return key

    def _read(self, path: Path) -> rsa.RSAPrivateKey | None:
        try:
            fd = open_file(path, follow=False)
        except (OSError, UnsafeFile) as exc:
            log.warning("pooled ssh key unusable; dropped", file=str(path), error=str(exc))
            return None
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                log.warning("pooled ssh key not ours; dropped", file=str(path), why=owned(info))
                return None
            data = read_all(fd, KEY_FILE_CAP, path)
        except (OSError, UnsafeFile) as exc:
            log.warning("pooled ssh key unusable; dropped", file=str(path), error=str(exc))
            return None
        finally:
            os.close(fd)
        try:
            loaded = serialization.load_pem_private_key(
                data, None, unsafe_skip_rsa_key_validation=True  # made by us, in our folder
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


def _plain_file(entry: os.DirEntry[str]) -> bool:
    try:
        return stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return False


def _drop(path: Path, why: str) -> None:
    """Removes a name from the pool's folder (a link itself, never what it points at)."""
    log.warning("ssh key pool: dropped", file=str(path), why=why)
    try:
        if not path.is_dir() or path.is_symlink():
            path.unlink()
    except OSError as exc:
        log.warning("ssh key pool: could not remove", file=str(path), error=str(exc))
