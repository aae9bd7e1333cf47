"""The ssh key pool survives a restart (issue: every restart emptied it, so the first burst
of CREATEs after an upgrade paid ~160 ms of CPU per key); each key is still handed out once.

Small RSA keys (1024 bits) keep these tests cheap; the pool does not care about the size.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from wodmail.host.keypool import KeyPool
from wodmail.lifecycle.backend import Backend

BITS = 1024


def filled(folder: Path, size: int, bits: int = BITS) -> KeyPool:
    pool = KeyPool(size, bits, folder)
    pool.start()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.pem"))) < size:
        assert time.monotonic() < deadline, "the pool never filled"
        time.sleep(0.02)
    pool.stop()
    return pool


def modulus_of(path: Path) -> int:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    return key.public_key().public_numbers().n  # type: ignore[union-attr]


def test_a_fresh_process_starts_with_the_keys_the_last_one_made(tmp_path):
    folder = tmp_path / "state" / "keys"
    filled(folder, 3)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.glob("*.pem"))
    assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600] * 3
    stored = {modulus_of(f) for f in files}

    restarted = KeyPool(3, BITS, folder)
    restarted._load_stored()  # what start() does first; no key is generated here
    assert len(restarted) == 3
    key = restarted.take()
    assert key.public_key().public_numbers().n in stored
    assert len(list(folder.glob("*.pem"))) == 2  # handed out once: its file is gone


def test_a_key_is_never_handed_out_twice_across_restarts(tmp_path):
    folder = tmp_path / "keys"
    filled(folder, 2)
    seen = set()
    for _ in range(2):
        pool = KeyPool(2, BITS, folder)
        pool._load_stored()
        seen.add(pool.take().public_key().public_numbers().n)
    assert len(seen) == 2
    assert list(folder.glob("*.pem")) == []


def test_unreadable_or_wrong_size_files_are_dropped(tmp_path):
    folder = tmp_path / "keys"
    filled(folder, 1)
    (folder / "0000-torn.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\ntorn by a crash")
    (folder / "half-written.tmp").write_bytes(b"partial")
    pool = KeyPool(2, 2048, folder)  # the config now asks for 2048-bit keys
    pool._load_stored()
    key = pool.take()
    assert key.key_size == 2048
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("size", [None, 0])
def test_the_daemon_keeps_its_pool_in_the_state_dir(make_config, size):
    config = make_config(accounts={"ssh_key_pool": size, "linux_passwords": False})
    backend = Backend.from_config(config)
    assert backend.keys.folder == config.state_dir / "keys"
