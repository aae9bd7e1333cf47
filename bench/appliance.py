"""How long a command on an appliance takes: on wodmail's kept connection against a fresh
`ssh` process per command (what the stock WoD scripts run, 8-20 times an order).

Starts one test appliance (tests/support/appliances.py: the real sshd of a Debian 12 root on
127.0.1.X; needs root, and builds or reuses the cached root file system), then runs `true`
on it N times each way, one after the other, and N times 8 at once on the kept connection.
Prints ms per command (p50, p90, mean), the connections each way opened, and the load
average. `.venv/bin/python bench/appliance.py [--calls 50]`
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _cli import positive  # noqa: E402  (bench/ is on sys.path when a script runs)

from support import appliances, reaper  # noqa: E402
from wodmail.appliances import Appliance, AppliancePool  # noqa: E402
from wodmail.config import parse_config  # noqa: E402
from wodmail.logs import configure_logging  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=positive, default=50, help="commands each way")
    args = parser.parse_args()
    configure_logging(quiet_level=logging.WARNING)
    why = appliances.missing()
    if why:
        print(f"cannot start an appliance here: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="wodmail-bench-appliance-") as work:
        return asyncio.run(_bench(Path(work), args.calls))


async def _bench(work: Path, calls: int) -> int:
    root = appliances.prepare_root(work)
    # Named <prefix><pid>: other test sessions leave the cgroups of a live process alone.
    cgroups = reaper.ReapedCgroup(f"{appliances.CGROUP_PREFIX}{os.getpid()}-bench")
    key = appliances.make_keypair(work / "key")
    spec = appliances.Spec(admin_pubkey=key.public)
    target = appliances.Appliance(spec, root, work / "appliance", cgroups)
    try:
        target.start()
        known = work / "known_hosts"
        known.write_text(f"{target.known_hosts_line()}\n")
        fresh = [_ssh_once(target, key, known) for _ in range(calls)]
        kept, first, opened = await _kept(target, key, known, calls)
        parallel = await _kept_parallel(target, key, known, calls)
    finally:
        target.close()
        cgroups.close()
    logins = 1 + calls  # the kept pool's one, and one per fresh ssh
    print(f"appliance commands (`true`), {calls} each way; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    _line("fresh `ssh` process per command", fresh)
    _line("kept connection, one at a time", kept)
    _line("kept connection, 8 at once (per command, wall clock / n)", parallel)
    print(f"first call on the kept connection (connect, key exchange, login): {first:.1f} ms; "
          f"connections opened: kept {opened}, fresh {calls} ({logins} logins in all)")
    print(f"speedup p50: {statistics.median(fresh) / statistics.median(kept):.1f}x")
    return 0


def _ssh_once(target: appliances.Appliance, key: appliances.KeyPair, known: Path) -> float:
    started = time.monotonic()
    subprocess.run([*target.ssh_argv(key, known_hosts=known), "true"], check=True,
                   capture_output=True, timeout=120)
    return (time.monotonic() - started) * 1000


def _pool(work_key: appliances.KeyPair, target: appliances.Appliance,
          known: Path) -> tuple[AppliancePool, Appliance]:
    config = parse_config({"state_dir": str(known.parent / "state"), "appliances": {
        "user": target.admin, "key": str(work_key.private), "known_hosts": str(known)}})
    pool = AppliancePool.from_config(config)
    return pool, Appliance(pool, target.address)


async def _kept(target: appliances.Appliance, key: appliances.KeyPair, known: Path,
                calls: int) -> tuple[list[float], float, int]:
    pool, app = _pool(key, target, known)
    try:
        started = time.monotonic()
        await app.run("true")
        first = (time.monotonic() - started) * 1000
        times = []
        for _ in range(calls):
            started = time.monotonic()
            await app.run("true")
            times.append((time.monotonic() - started) * 1000)
        return times, first, pool.opened
    finally:
        await pool.aclose()


async def _kept_parallel(target: appliances.Appliance, key: appliances.KeyPair, known: Path,
                         calls: int) -> list[float]:
    pool, app = _pool(key, target, known)
    try:
        await app.run("true")
        times = []
        for _ in range(max(1, calls // 8)):
            started = time.monotonic()
            await asyncio.gather(*(app.run("true") for _ in range(8)))
            times.append((time.monotonic() - started) * 1000 / 8)
        return times
    finally:
        await pool.aclose()


def _line(what: str, times: list[float]) -> None:
    ordered = sorted(times)
    p90 = ordered[int(len(ordered) * 0.9) - 1] if len(ordered) >= 10 else ordered[-1]
    print(f"  {what}: p50 {statistics.median(ordered):.1f} ms, p90 {p90:.1f} ms, "
          f"mean {statistics.fmean(ordered):.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
