"""What reading a WoD installation costs: once at start and on reload, and per order.

Builds the tests' installation tree (tests/support/wod_installation.py) in a temp folder, then
prints the time to load the config with its `installation` block (wod.sh sourced by bash,
inventories, group_vars, -e files, facts), and the time of the per-order part
(`Backend.renderer`: the workshop's variables files plus a per-student pass file with 3
vaulted values, as create scripts write them), against the same without a pass file.

    .venv/bin/python bench/installation.py [--orders 200] [--loads 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _cli import positive  # noqa: E402

from support.wod_installation import VAULT_PASSWORD, build_installation  # noqa: E402
from wodmail.config import parse_config  # noqa: E402
from wodmail.lifecycle.backend import Backend  # noqa: E402
from wodmail.lifecycle.workshop import local_workshop  # noqa: E402

WORKSHOP = "WKSHP-Bench101"


def vaulted(name: str, value: str) -> str:
    from ansible.parsing.vault import VaultLib, VaultSecret

    lib = VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])
    text = lib.encrypt(value).decode()
    body = "".join(f"          {line}\n" for line in text.splitlines())
    return f"'{name}': !vault |\n{body}"


def timed(function, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return times


def line(label: str, times: list[float]) -> str:
    p99 = sorted(times)[max(0, int(len(times) * 0.99) - 1)]
    return f"{label:<52} p50 {statistics.median(times):7.2f} ms   p99 {p99:7.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=positive, default=200)
    parser.add_argument("--loads", type=positive, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wodmail-bench-") as tmp:
        tree = build_installation(Path(tmp) / "root")
        (tree.notebooks / WORKSHOP).mkdir()
        (tree.public_vars / f"variables_{WORKSHOP}.yml").write_text("LAB: bench\n")
        data = tree.config()
        loads = timed(lambda: parse_config(data, "bench"), args.loads)
        config = parse_config(data, "bench")
        backend = Backend.from_config(config)
        workshop = local_workshop(config, WORKSHOP, WORKSHOP, "WKSHP")
        plain = timed(lambda: backend.renderer(workshop, 1, None), args.orders)
        (tree.pass_dir / f"variables_{WORKSHOP}_2.yml").write_text(
            vaulted("HTTPPORT", "17161") + vaulted("SPARKPORT", "17101")
            + vaulted("SPARKTOK", "0123456789abcdef")
        )
        with_pass = timed(lambda: backend.renderer(workshop, 2, None), args.orders)
    print(line(f"config + installation load (x{args.loads})", loads))
    print(line(f"per order, no pass file (x{args.orders})", plain))
    print(line(f"per order, pass file with 3 vaulted values (x{args.orders})", with_pass))
    return 0


if __name__ == "__main__":
    sys.exit(main())
