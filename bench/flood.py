"""Floods from an allowed local user, and what identifying local clients costs.

1. The real `wodmail serve` in a sandbox (as bench/soak.py; open-file limit 8192 as the
   systemd unit sets it), `listen.local_users` root and `nobody`. Root sends `--orders`
   orders one after the other (an ordinary CRLF client, waiting for each 250): the 250
   latency p50/p99. Then `nobody` (a child process under setpriv) opens `--idle` connections
   one after the other and holds them without a word, and root sends the same orders again.
   Printed: both latencies, how many of the idle connections got a session (220) and how
   many were refused at connect (421, `listen.max_connections_per_uid`), and the daemon's
   CPU per connection of the flood (identification included). Needs root (setpriv).
2. In this process: with `--idle` loopback connections open (twice as many sockets in the
   kernel's table), the owner of one of them looked up `--lookups` times through sock_diag
   (what wodmail uses) and through /proc/net/tcp (its fallback): microseconds per lookup.

Run: .venv/bin/python bench/flood.py [--idle 1000] [--orders 50] [--lookups 2000]
     [--per-uid N]   (listen.max_connections_per_uid; default: wodmail's default)
Exit status: 1 if an order from root was not acknowledged with 250, else 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import pwd
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from _cli import positive  # bench/ is on sys.path when a script runs

from wodmail.config import Listen
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, make_sandbox
from wodmail.dev.standins.flood import (
    IdleHolder,
    process_cpu_seconds,
    raise_own_file_limit,
    serve,
)
from wodmail.dev.standins.mail_clients import send_smtplib
from wodmail.intake.hostaddrs import parse_address
from wodmail.intake.sockowner import Endpoint, SocketOwners, owner_from_proc

OPEN_FILES = 8192  # the unit's LimitNOFILE
STUDENTS = 20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def orders_from_root(port: int, count: int, first_customer: int) -> tuple[list[float], int]:
    """(the 250 latency of each order, how many were not acknowledged with 250); a
    customer id per order, so that none is a duplicate of an earlier one."""
    latencies, failed = [], 0
    for index in range(count):
        student = index % STUDENTS + 1
        started = time.monotonic()
        code, _ = send_smtplib("127.0.0.1", port, f"CLEANUP {student} {first_customer + index}",
                               SAMPLE_WORKSHOP, sender="wodmail-bench@example.org")
        latencies.append(time.monotonic() - started)
        failed += code != 250
    return latencies, failed


def latency_line(title: str, latencies: list[float]) -> str:
    return (f"{title}: 250 p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms ({len(latencies)} orders)")


def flood_from_nobody(args: argparse.Namespace) -> int:
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory(prefix="wodmail-flood-") as folder:
        box = make_sandbox(Path(folder) / "sandbox", students=range(1, STUDENTS + 1))
        config = box.config_data()
        config["listen"].update(local_users=["root", "nobody"])
        # No ssh key pool: making keys in the background would take the CPU being measured.
        config["accounts"]["ssh_key_pool"] = 0
        if args.per_uid:
            config["listen"].update(max_connections_per_uid=args.per_uid,
                                    max_connections=max(256, args.per_uid + 64))
        try:
            with serve(Path(folder) / "serve", config, open_files=OPEN_FILES) as server:
                quiet, failed = orders_from_root(server.port, args.orders, 1000)
                print(latency_line("root's orders, no flood", quiet))
                cpu_before = process_cpu_seconds(server.process.pid)
                hog = IdleHolder(nobody.pw_uid, nobody.pw_gid, server.port, args.idle)
                try:
                    started = time.monotonic()
                    _uid, replies = hog.replies()
                    opened = time.monotonic() - started
                    cpu = process_cpu_seconds(server.process.pid) - cpu_before
                    flooded, failed_too = orders_from_root(server.port, args.orders, 2000)
                finally:
                    hog.close()
        finally:
            box.close()
    sessions = sum(reply.startswith("220") for reply in replies)
    refused = sum(reply.startswith("421") for reply in replies)
    print(f"nobody's {args.idle} idle connections: {sessions} sessions, {refused} refused "
          f"with 421, {len(replies) - sessions - refused} other; opened in {opened:.2f} s; "
          f"daemon CPU {cpu / max(1, len(replies)) * 1e6:.0f} us per connection")
    print(latency_line("root's orders while nobody holds them", flooded))
    if failed or failed_too:
        print(f"orders not acknowledged: {failed + failed_too}")
    return 1 if failed or failed_too else 0


@contextmanager
def loopback_connections(count: int) -> Iterator[list[tuple[Endpoint, Endpoint]]]:
    """`count` connections to a listener of this process: (client, server) as the server
    sees each one."""
    with ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=count))
        port = listener.getsockname()[1]
        pairs = []
        for _ in range(count):
            stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            accepted = stack.enter_context(listener.accept()[0])
            pairs.append((endpoint(accepted.getpeername()), endpoint(accepted.getsockname())))
        yield pairs


def endpoint(name: tuple[str, int]) -> Endpoint:
    address = parse_address(name[0])
    assert address is not None
    return address, int(name[1])


def lookup_costs(args: argparse.Namespace) -> None:
    owners = SocketOwners()
    with loopback_connections(args.idle) as pairs:
        # The last connection made: where it sits in /proc/net/tcp depends on the kernel's
        # hash, so the /proc figure is the average over all of them.
        costs = {}
        for name, lookup in (("sock_diag", owners.owner), ("/proc/net/tcp", owner_from_proc)):
            started = time.perf_counter()
            for index in range(args.lookups):
                client, server = pairs[index % len(pairs)]
                assert lookup(client, server) == os.geteuid()
            costs[name] = (time.perf_counter() - started) / args.lookups
    owners.close()
    print(f"owner of a client's socket, {args.idle} connections open: "
          + ", ".join(f"{name} {cost * 1e6:.0f} us" for name, cost in costs.items()))


def machine_line() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"machine: {platform.node()} {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, load average {load}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=positive, default=1000, help="idle connections held")
    parser.add_argument("--orders", type=positive, default=50, help="orders from root, each run")
    parser.add_argument("--lookups", type=positive, default=2000, help="owner lookups timed")
    parser.add_argument("--per-uid", type=positive, default=None,
                        help="listen.max_connections_per_uid "
                             f"(default {Listen().max_connections_per_uid})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(machine_line())
    if not raise_own_file_limit(2 * args.idle + 256):
        print(f"the hard open-file limit is below {2 * args.idle + 256}", file=sys.stderr)
        return 2
    lookup_costs(args)
    if os.geteuid() != 0:
        print("the flood from another user needs root (setpriv): skipped")
        return 0
    return flood_from_nobody(args)


if __name__ == "__main__":
    sys.exit(main())
