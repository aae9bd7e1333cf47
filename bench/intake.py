"""Intake benchmark: how fast wodmail takes orders, against a bare aiosmtpd handler.

Three measurements, each on a fresh server running in a subprocess (the clients run here, in
this process's event loop, the same way for every server):

1. wodmail, portal-style clients (bare LF burst, hang up on the first byte of the 220):
   orders/s from the first connect until the journal holds every order (committed, fsynced).
2. wodmail, CRLF clients doing an RFC 2920 pipelined transaction (EHLO | MAIL RCPT DATA |
   message . QUIT, reading every reply): orders/s until every client got its 250, which
   wodmail sends only after the commit.
3. Stock aiosmtpd `SMTP` with a handler whose handle_DATA discards the mail and answers
   250, with the same CRLF clients.

wodmail runs as deployed: the daemon with its dispatcher (no-op runner), the sender and
workshop checks on, INFO-level JSON logs (rendered, then written to /dev/null). Every order
is distinct (student 1..20, a customer id per order), so deduplication merges none.

Run: .venv/bin/python bench/intake.py [--clients 20] [--orders 2000] [--repeat 1]
Exit status: 1 if any order was lost (not committed, or a client got no 250), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtpd
from _cli import positive  # bench/ is on sys.path when a script runs
from aiosmtpd.smtp import SMTP

if TYPE_CHECKING:
    from wodmail.config import Config

# wodmail is imported inside the functions that use it, so that the bare server's process
# holds only asyncio and aiosmtpd and its peak RSS is its own.

HOST = "127.0.0.1"
WORKSHOP = "WKSHP-API101"
SENDER = "sender@example.org"
RECIPIENT = "wodadmin@backend.example.org"
FIRST_CUSTOMER = 10_000
STUDENTS = 20
GOAL_RATIO = 0.8
STARVED_SHARE = 0.85  # of one core
STALL_SECONDS = 15.0  # no new journal row for this long: the missing orders are lost
POLL_SECONDS = 0.002
STOP_GRACE_SECONDS = 30.0


# --- the orders ----------------------------------------------------------------------------


def order_subject(index: int) -> str:
    """Order `index`: a CREATE for student 1..20 and a customer id of its own."""
    student = index % STUDENTS + 1
    customer = FIRST_CUSTOMER + index
    return f"CREATE {student} {customer} p{index}@example.com"


def crlf_message(index: int) -> bytes:
    """The message an ordinary mail client sends: full headers, CRLF, dot-terminated."""
    return (
        f"From: {SENDER}\r\n"
        f"To: {RECIPIENT}\r\n"
        f"Subject: {order_subject(index)}\r\n"
        f"Message-ID: <bench-{index}@example.org>\r\n"
        "\r\n"
        f"{WORKSHOP}\r\n"
        ".\r\n"
    ).encode()


# --- the servers (run in a child process) ----------------------------------------------------


def wodmail_config(state_dir: Path) -> Config:
    from wodmail.config import parse_config

    return parse_config(
        {
            "listen": {"host": HOST, "port": 0},
            "state_dir": str(state_dir / "state"),
            "notebooks": {"public": str(state_dir / "notebooks")},
            "allowed_senders": [SENDER],
        },
        "bench",
    )


class DiscardingHandler:
    """The bare baseline: accept every mail, keep nothing."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


StopServer = Callable[[], Awaitable[None]]


async def start_wodmail(state_dir: Path) -> tuple[int, StopServer]:
    from wodmail.dispatch.dispatcher import noop_runner
    from wodmail.service import Daemon

    config = wodmail_config(state_dir)
    assert config.notebooks.public is not None
    (config.notebooks.public / WORKSHOP).mkdir(parents=True, exist_ok=True)
    daemon = Daemon(config, noop_runner)
    await daemon.start()
    return daemon.port, lambda: daemon.stop(STOP_GRACE_SECONDS)


async def start_bare() -> tuple[int, StopServer]:
    loop = asyncio.get_running_loop()
    hostname = socket.getfqdn()  # looked up once, as wodmail does, not per connection
    handler = DiscardingHandler()
    server = await loop.create_server(lambda: SMTP(handler, hostname=hostname, loop=loop), HOST, 0)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return int(server.sockets[0].getsockname()[1]), stop


def announce(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def serve(kind: str, state_dir: Path) -> None:
    """Child process: start the server, print its port, serve until SIGTERM, print peak RSS."""
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    port, stop = await (start_wodmail(state_dir) if kind == "wodmail" else start_bare())
    announce({"port": port})
    await stopping.wait()
    await stop()
    announce({"peak_rss_kib": peak_rss_kib()})


def peak_rss_kib() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the forking
    parent across exec, so it would report the bench process's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def serve_main(kind: str, state_dir: Path, profile: Path | None) -> int:
    with open(os.devnull, "w") as devnull:
        if kind == "wodmail":
            from wodmail.logs import configure_logging

            configure_logging(0, stream=devnull)  # as `wodmail serve`, minus journald's share
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        asyncio.run(serve(kind, state_dir))
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    return 0


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int
    peak_rss_kib: int = 0


@asynccontextmanager
async def server_process(
    kind: str, state_dir: Path, profile: Path | None = None
) -> AsyncIterator[ServerProcess]:
    command = [sys.executable, __file__, "--serve", kind, "--state-dir", str(state_dir)]
    if profile is not None:
        command += ["--profile", str(profile)]
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        await process.wait()
        raise RuntimeError(f"the {kind} server did not start (exit status {process.returncode})")
    server = ServerProcess(process, json.loads(line)["port"])
    try:
        yield server
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        line = await process.stdout.readline()
        await process.wait()
        if line:
            server.peak_rss_kib = json.loads(line)["peak_rss_kib"]


# --- the clients ---------------------------------------------------------------------------


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One SMTP reply (all lines of a multi-line one); returns its last line."""
    while True:
        line = await reader.readline()
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def crlf_transaction(port: int, index: int) -> bool:
    """One order the RFC 2920 way; True if the message got a 250."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    try:
        if not (await read_reply(reader)).startswith(b"220"):
            return False
        writer.write(b"EHLO client.example.org\r\n")
        if not (await read_reply(reader)).startswith(b"250"):
            return False
        writer.write(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
        replies = [await read_reply(reader) for _ in range(3)]
        if not replies[2].startswith(b"354"):
            return False
        writer.write(crlf_message(index) + b"QUIT\r\n")
        accepted = (await read_reply(reader)).startswith(b"250")
        await read_reply(reader)  # 221
        return accepted
    except OSError:
        return False
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def crlf_client(port: int, indexes: Iterator[int]) -> int:
    acknowledged = 0
    for index in indexes:
        acknowledged += await crlf_transaction(port, index)
    return acknowledged


async def portal_client(port: int, indexes: Iterator[int]) -> int:
    from wodmail.dev.standins.mail_clients import send_portal_style_async

    sent = 0
    for index in indexes:
        try:
            await send_portal_style_async(HOST, port, order_subject(index), WORKSHOP)
            sent += 1
        except OSError:
            pass
    return sent


# --- the measurements -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stopwatch:
    """Wall time, and the CPU time the server and the clients (this process) used meanwhile."""

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._wall = time.perf_counter()
        self._server = cpu_seconds(server_pid)
        self._client = time.process_time()

    def stop(self) -> Window:
        return Window(
            seconds=time.perf_counter() - self._wall,
            server_cpu=cpu_seconds(self._pid) - self._server,
            client_cpu=time.process_time() - self._client,
        )


@dataclass
class Window:
    seconds: float
    server_cpu: float
    client_cpu: float


@dataclass
class Result:
    window: Window
    recorded: int  # orders committed (wodmail) or acknowledged with 250 (bare)
    peak_rss_kib: int

    def rate(self) -> float:
        return self.recorded / self.window.seconds if self.window.seconds > 0 else 0.0


def journal_rows(path: Path) -> Callable[[], int]:
    """A cheap row counter on a read-only connection (each call sees the latest commit)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return lambda: int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])


def accepted_orders(path: Path) -> int:
    """Distinct accepted orders in the journal, read the way `wodmail jobs` reads it."""
    from wodmail.journal.jobs import JobState
    from wodmail.journal.store import JournalReader

    jobs = JournalReader(path).list_jobs()
    return len({job.customer for job in jobs if job.state is not JobState.REJECTED})


async def wait_for_rows(count_rows: Callable[[], int], wanted: int) -> None:
    """Returns when the journal holds `wanted` rows, or when it stopped growing."""
    last, last_change = -1, time.perf_counter()
    while (rows := count_rows()) < wanted:
        now = time.perf_counter()
        if rows != last:
            last, last_change = rows, now
        elif now - last_change > STALL_SECONDS:
            return
        await asyncio.sleep(POLL_SECONDS)


async def run_clients(
    client: Callable[[int, Iterator[int]], Awaitable[int]], port: int, clients: int, orders: int
) -> int:
    indexes = iter(range(orders))  # shared: each client takes the next order
    return sum(await asyncio.gather(*(client(port, indexes) for _ in range(clients))))


async def measure_wodmail_portal(
    workdir: Path, clients: int, orders: int, profile: Path | None
) -> Result:
    journal = wodmail_config(workdir).journal_path()
    async with server_process("wodmail", workdir, profile) as server:
        count_rows = journal_rows(journal)
        stopwatch = Stopwatch(server.process.pid)
        await run_clients(portal_client, server.port, clients, orders)
        await wait_for_rows(count_rows, orders)
        window = stopwatch.stop()
    return Result(window, accepted_orders(journal), server.peak_rss_kib)


async def measure_crlf(
    kind: str, workdir: Path, clients: int, orders: int, profile: Path | None
) -> Result:
    async with server_process(kind, workdir, profile) as server:
        stopwatch = Stopwatch(server.process.pid)
        acknowledged = await run_clients(crlf_client, server.port, clients, orders)
        window = stopwatch.stop()
    recorded = acknowledged
    if kind == "wodmail":  # a 250 must mean a committed order: check the journal too
        recorded = min(acknowledged, accepted_orders(wodmail_config(workdir).journal_path()))
    return Result(window, recorded, server.peak_rss_kib)


SCENARIOS = {
    "portal": "1 wodmail, portal clients (to commit)",
    "crlf": "2 wodmail, CRLF pipelined (to 250)",
    "bare": "3 bare aiosmtpd, CRLF pipelined",
}


async def run_once(
    base: Path, clients: int, orders: int, profile: Path | None
) -> dict[str, Result]:
    def fresh(name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))

    def profile_of(name: str) -> Path | None:
        return profile.with_name(f"{profile.name}-{name}.prof") if profile else None

    return {
        "portal": await measure_wodmail_portal(
            fresh("portal"), clients, orders, profile_of("portal")
        ),
        "crlf": await measure_crlf("wodmail", fresh("crlf"), clients, orders, profile_of("crlf")),
        "bare": await measure_crlf("bare", fresh("bare"), clients, orders, None),
    }


# --- the report -----------------------------------------------------------------------------


def machine_line(base: Path) -> str:
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"aiosmtpd {aiosmtpd.__version__}, {platform.system()} {platform.release()}, "
        f"load avg {load[0]:.2f}, journal under {base}"
    )


def scenario_line(title: str, results: list[Result], orders: int) -> str:
    rates = [result.rate() for result in results]
    recorded = min(result.recorded for result in results)
    cpu_ms = statistics.median(1000 * r.window.server_cpu / orders for r in results)
    server_busy = statistics.median(r.window.server_cpu / r.window.seconds for r in results)
    client_busy = statistics.median(r.window.client_cpu / r.window.seconds for r in results)
    rss = max(result.peak_rss_kib for result in results) / 1024
    line = (
        f"{title:<38} {statistics.median(rates):>8.0f} {recorded:>6}/{orders:<6}"
        f"{cpu_ms:>9.2f} {server_busy:>7.0%} {client_busy:>7.0%} {rss:>8.1f}"
    )
    if len(results) > 1:
        line += f"   runs: {', '.join(f'{rate:.0f}' for rate in rates)}"
    return line + ("" if recorded == orders else "   ORDERS LOST")


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def report(runs: list[dict[str, Result]], clients: int, orders: int) -> bool:
    """Prints the table; returns True when no order was lost."""
    print(f"load: {clients} concurrent clients, {orders} orders per run, {len(runs)} run(s)")
    print(
        f"{'scenario':<38} {'orders/s':>8} {'recorded':>13}{'srv ms/o':>9}"
        f" {'srv CPU':>7} {'cli CPU':>7} {'RSS MiB':>8}"
    )
    for key, title in SCENARIOS.items():
        print(scenario_line(title, [run[key] for run in runs], orders))
    print(
        "(orders/s: median; srv ms/o: server CPU per order; srv/cli CPU: share of one core\n"
        " used by the server process / by the clients; RSS: server peak)"
    )
    rate = {key: statistics.median(run[key].rate() for run in runs) for key in SCENARIOS}
    cost = {key: statistics.median(run[key].window.server_cpu for run in runs) for key in SCENARIOS}
    crlf_ratio = ratio(rate["crlf"], rate["bare"])
    portal_ratio = ratio(rate["portal"], rate["bare"])
    print(f"ratio wodmail/bare, orders/s: CRLF {crlf_ratio:.2f}, portal {portal_ratio:.2f}")
    print(
        "ratio wodmail/bare, CPU cost (bare CPU per order / wodmail's):"
        f" CRLF {ratio(cost['bare'], cost['crlf']):.2f},"
        f" portal {ratio(cost['bare'], cost['portal']):.2f}"
    )
    warn_if_starved(runs)
    complete = all(run[key].recorded == orders for run in runs for key in SCENARIOS)
    # The goal compares wodmail taking the portal's orders with a bare handler taking CRLF
    # ones (the bare one cannot read the portal's); the CRLF pair is shown for information.
    met = complete and portal_ratio >= GOAL_RATIO
    verdict = "met" if met else "NOT met"
    print(
        f"goal (portal-style into wodmail >= {GOAL_RATIO} of bare, every order committed to"
        f" disk): {verdict}; CRLF into both: {crlf_ratio:.2f}"
    )
    return complete


def warn_if_starved(runs: list[dict[str, Result]]) -> None:
    """Every server here is CPU-bound; one that got less than a core was starved by others."""
    starved = {
        key
        for run in runs
        for key, result in run.items()
        if result.window.server_cpu / result.window.seconds < STARVED_SHARE
    }
    if starved:
        print(
            f"warning: the server got less than {STARVED_SHARE:.0%} of a core in"
            f" {', '.join(sorted(starved))} (load avg now {os.getloadavg()[0]:.2f}): the"
            " machine is busy and orders/s are unreliable; trust the CPU-cost ratio more,"
            " or rerun with --repeat"
        )


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=positive, default=20, help="concurrent clients")
    parser.add_argument("--orders", type=positive, default=2000, help="orders per measurement")
    parser.add_argument(
        "--repeat", type=positive, default=1, help="runs, interleaved; the median is shown"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the journals go (default: a temp dir)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the wodmail servers under cProfile: writes PROFILE-portal.prof, -crlf.prof",
    )
    parser.add_argument("--serve", choices=["wodmail", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_main(args.serve, args.state_dir, args.profile)
    with tempfile.TemporaryDirectory(prefix="wodmail-bench-", dir=args.workdir) as base:
        print(machine_line(Path(base)))
        if args.profile is not None:
            args.profile.parent.mkdir(parents=True, exist_ok=True)
            print("profiling the wodmail servers: their figures below are slowed down by it")
        runs = [
            asyncio.run(run_once(Path(base), args.clients, args.orders, args.profile))
            for _ in range(args.repeat)
        ]
    return 0 if report(runs, args.clients, args.orders) else 1


if __name__ == "__main__":
    sys.exit(main())
