"""Chaos: SIGKILL the real `wodmail serve` at random moments under a stream of orders, and
count what a participant would notice (the harness, and what it counts, is
tests/support/chaos.py; tests/e2e/test_crash_stream.py runs a small version in CI).

Run: .venv/bin/python bench/chaos.py [--kills 100] [--students 20] [--rounds 5] [--rate 2]
[--seed S]. Exit 1 on any defect.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _cli import positive  # noqa: E402  (bench/ is on sys.path when a script runs)

from support.chaos import run_stream  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=positive, default=100)
    parser.add_argument("--students", type=positive, default=20)
    parser.add_argument("--rounds", type=positive, default=5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate", type=float, default=2.0,
                        help="orders sent per second (0: as fast as they are acknowledged)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seed {seed} (--seed {seed} replays the same kill times)", flush=True)
    with tempfile.TemporaryDirectory(prefix="wodmail-chaos-", dir=args.workdir) as base:
        report = run_stream(Path(base), students=args.students, rounds=args.rounds,
                            kills=args.kills, seed=seed, rate=args.rate,
                            progress=lambda line: print(line, flush=True))
    for line in report.lines():
        print(line)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
