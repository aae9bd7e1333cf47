"""RSA key pairs made ahead of time, so a CREATE does not wait ~160 ms of CPU for one.

A key is only randomness until it is written into a student's home, so a background
thread fills a pool while the backend is idle (keygen releases the GIL: the event loop
keeps running). Each key is handed out once and lives only in memory. When a burst of
CREATEs empties the pool, keys are generated inline and the pool refills afterwards.
"""

from __future__ import annotations

import collections
import os
import threading

import structlog
from cryptography.hazmat.primitives.asymmetric import rsa

log = structlog.get_logger(__name__)


def generate_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


class KeyPool:
    def __init__(self, size: int, bits: int = 3072) -> None:
        self.size = size
        self.bits = bits
        self._keys: collections.deque[rsa.RSAPrivateKey] = collections.deque()
        self._wanted = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.size <= 0 or self._thread is not None:
            return
        self._wanted.set()
        self._thread = threading.Thread(target=self._fill, name="wodmail-keypool", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            # Refilling must never compete with orders for the CPU (2 cores at an event).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while not self._stopped:
            self._wanted.wait()
            while not self._stopped and len(self._keys) < self.size:
                self._keys.append(generate_key(self.bits))
            self._wanted.clear()

    def take(self) -> rsa.RSAPrivateKey:
        """A pooled key if there is one, else a fresh one made now."""
        try:
            key = self._keys.popleft()
        except IndexError:
            key = generate_key(self.bits)
        self._wanted.set()
        return key

    def __len__(self) -> int:
        return len(self._keys)

    def stop(self) -> None:
        self._stopped = True
        self._wanted.set()
