"""The ssh key pool survives a restart (issue: every restart emptied it, so the first burst
of CREATEs after an upgrade paid ~160 ms of CPU per key); each key is still handed out once.

Small RSA keys (1024 bits) keep these tests cheap; the pool does not care about the size.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import structlog.testing
from cryptography.hazmat.primitives import serialization

from wodmail.host import keypool
from wodmail.host.keyledger import KeyLedger
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


# --- the folder is trusted for nothing ---------------------------------------------------------


def n_of(key) -> int:
    return key.public_key().public_numbers().n


def test_two_copies_of_one_key_file_hand_out_one_key(tmp_path):
    folder = tmp_path / "state" / "keys"
    filled(folder, 1)
    [original] = folder.glob("*.pem")
    shutil.copy2(original, folder / "0000-copy.pem")
    stored = modulus_of(original)

    pool = KeyPool(2, BITS, folder)
    pool._load_stored()
    assert len(pool) == 2
    with structlog.testing.capture_logs() as logs:
        handed = [n_of(pool.take()), n_of(pool.take())]

    assert handed.count(stored) == 1  # the second one is a fresh key made inline
    assert any("handed out before" in line["event"] for line in logs)
    assert list(folder.glob("*.pem")) == []


def test_a_copy_restored_after_a_restart_is_not_handed_out_again(tmp_path):
    folder = tmp_path / "state" / "keys"
    filled(folder, 1)
    [original] = folder.glob("*.pem")
    backup = tmp_path / "backup.pem"
    shutil.copy2(original, backup)
    first = KeyPool(1, BITS, folder)
    first._load_stored()
    handed = n_of(first.take())

    shutil.copy2(backup, folder / "restored.pem")  # e.g. a backup of keys/ put back
    restarted = KeyPool(1, BITS, folder)
    restarted._load_stored()
    assert len(restarted) == 1
    assert n_of(restarted.take()) != handed
    assert (tmp_path / "state" / "keys-handed-out").read_text().count("\n") == 1


def test_links_and_other_files_in_the_folder_are_never_handed_out(tmp_path):
    folder = tmp_path / "state" / "keys"
    filled(folder, 1)
    [real] = folder.glob("*.pem")
    outside = tmp_path / "outside.pem"
    real.rename(outside)  # a valid key, but outside the pool: only a link to it remains
    (folder / "link.pem").symlink_to(outside)
    os.mkfifo(folder / "fifo.pem")
    (folder / "folder.pem").mkdir()

    pool = KeyPool(1, BITS, folder)
    pool._load_stored()
    assert len(pool) == 0
    assert n_of(pool.take()) != modulus_of(outside)
    assert sorted(p.name for p in folder.iterdir()) == ["folder.pem"]
    assert outside.exists()  # the link went, not what it pointed at


def test_a_key_file_swapped_for_a_link_after_loading_is_dropped(tmp_path):
    folder = tmp_path / "keys"
    filled(folder, 1)
    [key_file] = folder.glob("*.pem")
    outside = tmp_path / "outside.pem"
    pool = KeyPool(1, BITS, folder)
    pool._load_stored()
    key_file.rename(outside)
    key_file.symlink_to(outside)
    assert n_of(pool.take()) != modulus_of(outside)
    assert outside.exists() and not key_file.is_symlink()


def test_a_symlinked_pool_folder_is_not_used(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "keys").symlink_to(elsewhere)
    pool = KeyPool(1, BITS, tmp_path / "state" / "keys")
    pool._load_stored()
    assert pool.folder is None  # keys stay in memory
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert pool.take().key_size == BITS
    assert list(elsewhere.iterdir()) == []


def test_the_ledger_keeps_the_newest_fingerprints_within_its_bound(tmp_path):
    path = tmp_path / "keys-handed-out"
    ledger = KeyLedger(path, limit=4)
    digests = [f"{n:064x}" for n in range(11)]
    assert all(ledger.claim(d) for d in digests)
    assert not ledger.claim(digests[-1])
    assert len(path.read_text().split()) <= 8  # compacted at twice the bound
    reloaded = KeyLedger(path, limit=4)
    assert len(reloaded) == 4
    assert not reloaded.claim(digests[-1]) and not reloaded.claim(digests[-4])
    assert reloaded.claim(digests[0])  # beyond the bound: forgotten


# --- refilled when the backend is idle, not during a burst -------------------------------------


def wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_keys_taken_in_a_burst_are_replaced_only_once_takes_stop(tmp_path, monkeypatch):
    """A burst of CREATEs keeps the CPU: the pool refills after it, not during it."""
    monkeypatch.setattr(keypool, "QUIET_SECONDS", 0.5)
    folder = tmp_path / "keys"
    pool = KeyPool(4, BITS, folder)
    pool.start()
    wait_for(lambda: len(list(folder.glob("*.pem"))) == 4, "the pool never filled")
    before = set(folder.glob("*.pem"))
    pool.take()
    pool.take()
    last_take = time.time()
    wait_for(lambda: len(pool) == 4, "the pool was never topped up")
    pool.stop()
    made = set(folder.glob("*.pem")) - before
    assert len(made) == 2
    # file times come from the kernel's coarse clock, a tick behind time.time() at most
    assert min(f.stat().st_mtime for f in made) >= last_take + 0.5 - 0.05


def test_a_pool_drawn_under_its_low_water_mark_refills_while_keys_are_still_taken(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(keypool, "QUIET_SECONDS", 3600.0)  # never idle in this test
    folder = tmp_path / "keys"
    pool = KeyPool(10, BITS, folder)
    pool._load_stored()
    assert pool.pause_before_refill(time.monotonic()) == 0  # never taken from: fill now
    pool.start()
    wait_for(lambda: len(pool) == 10, "the pool never filled")
    for _ in range(9):
        pool.take()
    assert len(pool) == pool.low_water == 1
    assert pool.pause_before_refill(time.monotonic()) > 3500  # busy: not refilled yet
    pool.take()
    wait_for(lambda: len(pool) == 1, "an empty pool was not refilled up to its low water mark")
    assert pool.pause_before_refill(time.monotonic()) > 3500  # and no further while busy
    pool.stop()
