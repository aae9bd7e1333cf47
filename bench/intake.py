"""Intake benchmark: how fast wodmail takes orders, against a bare aiosmtpd handler and Postfix.

Each measurement runs on a fresh server in a subprocess (the clients run here, in this
process's event loop, the same way for every server).

Without execution (the dispatcher's runner does nothing):
1. wodmail, portal-style clients (bare LF burst, hang up on the first byte of the 220):
   orders/s from the first connect until the journal holds every order (committed, fsynced).
2. wodmail, CRLF clients doing an RFC 2920 pipelined transaction (EHLO | MAIL RCPT DATA |
   message . QUIT, reading every reply): orders/s until every client got its 250, which
   wodmail sends only after the commit.
3. Stock aiosmtpd `SMTP` with a handler whose handle_DATA discards the mail and answers
   250, with the same CRLF clients.

While orders execute (issue #15), 8 CRLF clients (`--exec-clients`), each waiting for the
250 of its order before it sends the next one:
4. wodmail running the real lifecycle: the daemon of `bench/lifecycle.py` in its sandbox
   (real `chpasswd -R`, homes wiped and deployed, hooks, stand-in portal and hub in a
   process of their own), its key pool full when the clients start. Every order is a
   CREATE, so the orders acknowledged first execute while the others arrive.
5. wodmail with the no-op runner (the same clients, nothing executing): what execution costs.
6. The bare aiosmtpd handler of 3. with these clients.
7. Postfix (Debian's package, root only: see `_postfix.py`), a private instance on a loopback
   port whose queue files are fsynced before each 250, delivering to `discard`; without it,
   the issue's figure for Postfix 3.7 on a 2-core machine, 572 orders/s, is printed as a
   fixed reference.
Each prints orders/s, the ack latency (the message's final `.` written -> its 250 read)
p50/p99, and the ratios to the bare handler and to Postfix of the same run.

wodmail runs as deployed: the daemon with its dispatcher, the sender and workshop checks
on, INFO-level JSON logs (rendered, then written to /dev/null). Every order is distinct (a
customer id per order), so deduplication merges none.

Run: .venv/bin/python bench/intake.py [--clients 20] [--orders 2000] [--repeat 1]
     [--exec-clients 8] [--exec-orders 2000] [--only intake|executing]
Exit status: 1 if any order was lost (not committed, or a client got no 250), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import math
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtpd
from _cli import positive  # bench/ is on sys.path when a script runs
from _postfix import missing as postfix_missing
from _postfix import postfix_server
from _postfix import version as postfix_version
from _standins import Standins, make_keys
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
EXEC_CLIENTS = 8
EXEC_STUDENTS = 200  # the sandbox's range while orders execute (and its key pool)
POSTFIX_REFERENCE = 572.0  # orders/s, the figure for Postfix 3.7 on 2 cores
STARVED_SHARE = 0.85  # of one core
STALL_SECONDS = 15.0  # no new journal row for this long: the missing orders are lost
POLL_SECONDS = 0.002
STOP_GRACE_SECONDS = 30.0


# --- the orders ----------------------------------------------------------------------------


def student_of(index: int, students: int = STUDENTS) -> int:
    return index % students + 1


def order_subject(index: int, students: int = STUDENTS) -> str:
    """Order `index`: a CREATE for student 1..`students` and a customer id of its own."""
    customer = FIRST_CUSTOMER + index
    return f"CREATE {student_of(index, students)} {customer} p{index}@example.com"


@dataclass(frozen=True)
class Orders:
    """What the clients send: order `index` as an ordinary mail client's message."""

    workshop: str = WORKSHOP
    students: int = STUDENTS

    def message(self, index: int) -> bytes:
        """Full headers, CRLF, dot-terminated."""
        return (
            f"From: {SENDER}\r\n"
            f"To: {RECIPIENT}\r\n"
            f"Subject: {order_subject(index, self.students)}\r\n"
            f"Message-ID: <bench-{index}@example.org>\r\n"
            "\r\n"
            f"{self.workshop}\r\n"
            ".\r\n"
        ).encode()


# --- the servers (run in a child process) ----------------------------------------------------


def wodmail_config(state_dir: Path) -> Config:
    from wodmail.config import parse_config

    return parse_config(
        {
            # The clients are all one local uid: its cap (64 sessions) would refuse the
            # portal's connections with a 421 it never reads whenever the server falls
            # behind (a real portal is a remote client, with its own cap per address).
            "listen": {"host": HOST, "port": 0, "max_connections": 1024,
                       "max_connections_per_uid": 1024},
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


def source_env(daemon_src: Path | None) -> dict[str, str] | None:
    """The environment of a wodmail child taking wodmail from `daemon_src` (another
    commit's `src/`, to compare back to back), or None: this checkout's."""
    if daemon_src is None:
        return None
    return {**os.environ, "PYTHONPATH": str(daemon_src.resolve())}


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
    kind: str, state_dir: Path, profile: Path | None = None, daemon_src: Path | None = None
) -> AsyncIterator[ServerProcess]:
    command = [sys.executable, __file__, "--serve", kind, "--state-dir", str(state_dir)]
    if profile is not None:
        command += ["--profile", str(profile)]
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        env=source_env(daemon_src),
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


class CrlfClients:
    """Ordinary mail clients: one order per session, the RFC 2920 way, each client waiting
    for its order's 250 before it sends the next one. Keeps each order's ack latency: from
    the message's final `.` written to its 250 read."""

    def __init__(self, orders: Orders | None = None) -> None:
        self.orders = orders or Orders()
        self.latencies: list[float] = []

    async def client(self, port: int, indexes: Iterator[int]) -> int:
        acknowledged = 0
        for index in indexes:
            latency = await self.transaction(port, index)
            if latency is not None:
                acknowledged += 1
                self.latencies.append(latency)
        return acknowledged

    async def transaction(self, port: int, index: int) -> float | None:
        """One order; its ack latency, or None if the message got no 250."""
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            return None
        try:
            if not (await read_reply(reader)).startswith(b"220"):
                return None
            writer.write(b"EHLO client.example.org\r\n")
            if not (await read_reply(reader)).startswith(b"250"):
                return None
            writer.write(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
            replies = [await read_reply(reader) for _ in range(3)]
            if not replies[2].startswith(b"354"):
                return None
            writer.write(self.orders.message(index) + b"QUIT\r\n")
            sent = time.perf_counter()
            accepted = (await read_reply(reader)).startswith(b"250")
            latency = time.perf_counter() - sent
            await read_reply(reader)  # 221
            return latency if accepted else None
        except OSError:
            return None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


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
    """Wall time, and the CPU time the server and the clients (this process) used meanwhile.

    `server` is a process id, or a function giving the server's CPU seconds so far (Postfix
    is many processes)."""

    def __init__(self, server: int | Callable[[], float]) -> None:
        self._server_cpu = server if callable(server) else (lambda: cpu_seconds(server))
        self._wall = time.perf_counter()
        self._server = self._server_cpu()
        self._client = time.process_time()

    def stop(self) -> Window:
        return Window(
            seconds=time.perf_counter() - self._wall,
            server_cpu=self._server_cpu() - self._server,
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
    latencies: list[float] = field(default_factory=list)  # ack latencies, CRLF clients
    executed: int | None = None  # orders that finished executing within the window
    sent: int | None = None  # portal clients: orders handed over (a connect may fail)

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
        sent = await run_clients(portal_client, server.port, clients, orders)
        await wait_for_rows(count_rows, sent)
        window = stopwatch.stop()
    return Result(window, accepted_orders(journal), server.peak_rss_kib, sent=sent)


async def measure_crlf(
    kind: str, workdir: Path, clients: int, orders: int, profile: Path | None,
    daemon_src: Path | None = None,
) -> Result:
    async with server_process(kind, workdir, profile, daemon_src) as server:
        stopwatch = Stopwatch(server.process.pid)
        crlf = CrlfClients()
        acknowledged = await run_clients(crlf.client, server.port, clients, orders)
        window = stopwatch.stop()
    recorded = acknowledged
    if kind == "wodmail":  # a 250 must mean a committed order: check the journal too
        recorded = min(acknowledged, accepted_orders(wodmail_config(workdir).journal_path()))
    return Result(window, recorded, server.peak_rss_kib, crlf.latencies)


async def measure_executing(
    workdir: Path, plan: Plan, profile: Path | None, daemon_src: Path | None = None
) -> Result:
    """wodmail running the real lifecycle (bench/lifecycle.py's daemon and sandbox): every
    order is a CREATE, executed while the clients send the next ones."""
    import lifecycle  # bench/ is on sys.path when a script runs
    from wodmail.config import load_config

    clients, orders, students = plan.exec_clients, plan.exec_orders, plan.exec_students
    assert plan.keys is not None
    async with Standins.start(
        workdir, students, orders, FIRST_CUSTOMER, SENDER, plan.keys
    ) as standins:
        journal = load_config(standins.config).journal_path()
        daemon = await lifecycle.DaemonProcess.start(standins.config, profile, daemon_src)
        try:
            await daemon.wait_pool_full()  # as before an event (its files were copied in)
            crlf = CrlfClients(Orders(standins.workshop, students))
            stopwatch = Stopwatch(daemon.process.pid)
            began = time.time()
            acknowledged = await run_clients(crlf.client, daemon.port, clients, orders)
            window = stopwatch.stop()
            executed = finished_since(journal, began)
            rss_kib = int(daemon.peak_rss_mib() * 1024)
        finally:
            await daemon.stop()
        recorded = min(acknowledged, accepted_orders(journal))
    return Result(window, recorded, rss_kib, crlf.latencies, executed)


def finished_since(journal: Path, began: float) -> int:
    """Orders done since `began` (wall clock), read from the journal."""
    from wodmail.journal.jobs import JobState
    from wodmail.journal.store import JournalReader

    jobs = JournalReader(journal).list_jobs(states=[JobState.DONE])
    return sum(1 for job in jobs if job.finished_at is not None and job.finished_at >= began)


async def measure_postfix(clients: int, orders: int) -> Result:
    async with postfix_server() as server:
        crlf = CrlfClients()
        stopwatch = Stopwatch(server.cpu_seconds)
        acknowledged = await run_clients(crlf.client, server.port, clients, orders)
        window = stopwatch.stop()
    return Result(window, acknowledged, 0, crlf.latencies)


SCENARIOS = {
    "portal": "1 wodmail, portal clients (to commit)",
    "crlf": "2 wodmail, CRLF pipelined (to 250)",
    "bare": "3 bare aiosmtpd, CRLF pipelined",
}
EXECUTING_SCENARIOS = {
    "executing": "4 wodmail, CREATEs executing",
    "executing-before": "4b the same, --before-src",
    "idle": "5 wodmail, nothing executing",
    "idle-before": "5b the same, --before-src",
    "bare-8": "6 bare aiosmtpd",
    "postfix": "7 Postfix {version}, queue fsynced",
}


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    sections: frozenset[str]  # "intake", "executing"
    clients: int
    orders: int
    exec_clients: int
    exec_orders: int
    exec_students: int
    postfix: bool
    profile: Path | None
    before_src: Path | None = None  # another commit's src/, measured in the same runs
    keys: Path | None = None  # the key pool's files, copied into each run's state dir


async def run_once(base: Path, plan: Plan) -> dict[str, Result]:
    def fresh(name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))

    def profile_of(name: str) -> Path | None:
        profile = plan.profile
        return profile.with_name(f"{profile.name}-{name}.prof") if profile else None

    results: dict[str, Result] = {}
    if "intake" in plan.sections:
        clients, orders = plan.clients, plan.orders
        results["portal"] = await measure_wodmail_portal(
            fresh("portal"), clients, orders, profile_of("portal")
        )
        results["crlf"] = await measure_crlf(
            "wodmail", fresh("crlf"), clients, orders, profile_of("crlf")
        )
        results["bare"] = await measure_crlf("bare", fresh("bare"), clients, orders, None)
    if "executing" in plan.sections:
        clients, orders = plan.exec_clients, plan.exec_orders
        if plan.before_src is not None:
            results["executing-before"] = await measure_executing(
                fresh("executing-before"), plan, None, plan.before_src
            )
        results["executing"] = await measure_executing(
            fresh("executing"), plan, profile_of("executing")
        )
        if plan.before_src is not None:
            results["idle-before"] = await measure_crlf(
                "wodmail", fresh("idle-before"), clients, orders, None, plan.before_src
            )
        results["idle"] = await measure_crlf(
            "wodmail", fresh("idle"), clients, orders, profile_of("idle")
        )
        results["bare-8"] = await measure_crlf("bare", fresh("bare-8"), clients, orders, None)
        if plan.postfix:
            results["postfix"] = await measure_postfix(clients, orders)
    return results


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
    return line + lost_note(results, orders)


def lost_note(results: list[Result], orders: int) -> str:
    """Orders lost by the server, told apart from those a client could not hand over."""
    unsent = max(orders - r.sent for r in results if r.sent is not None) if any(
        r.sent is not None for r in results) else 0
    lost = any(r.recorded < (orders if r.sent is None else r.sent) for r in results)
    note = "   ORDERS LOST" if lost else ""
    if unsent:
        note += f"   {unsent} not handed over (the client's connect failed)"
    return note


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def report_intake(runs: list[dict[str, Result]], clients: int, orders: int) -> bool:
    """Prints the table without execution; returns True when no order was lost."""
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
    warn_if_starved([{key: run[key] for key in SCENARIOS} for run in runs])
    complete = all(
        run[key].recorded == (orders if run[key].sent is None else run[key].sent)
        for run in runs for key in SCENARIOS
    )
    # The goal compares wodmail taking the portal's orders with a bare handler taking CRLF
    # ones (the bare one cannot read the portal's); the CRLF pair is shown for information.
    met = complete and portal_ratio >= GOAL_RATIO
    verdict = "met" if met else "NOT met"
    print(
        f"goal (portal-style into wodmail >= {GOAL_RATIO} of bare, every order committed to"
        f" disk): {verdict}; CRLF into both: {crlf_ratio:.2f}"
    )
    return complete


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


def executing_line(title: str, results: list[Result], orders: int) -> str:
    rates = [result.rate() for result in results]
    recorded = min(result.recorded for result in results)
    latencies = [latency for result in results for latency in result.latencies]
    cpu_ms = statistics.median(1000 * r.window.server_cpu / orders for r in results)
    server_busy = statistics.median(r.window.server_cpu / r.window.seconds for r in results)
    executed = [r.executed for r in results if r.executed is not None]
    line = (
        f"{title:<38} {statistics.median(rates):>8.0f} {recorded:>6}/{orders:<6}"
        f"{ms(percentile(latencies, 50)):>10} {ms(percentile(latencies, 99)):>10}"
        f"{cpu_ms:>9.2f} {server_busy:>7.0%}"
        f"{statistics.median(executed) if executed else '':>9}"
    )
    if len(results) > 1:
        line += f"   runs: {', '.join(f'{rate:.0f}' for rate in rates)}"
    return line + ("" if recorded == orders else "   ORDERS LOST")


def report_executing(runs: list[dict[str, Result]], plan: Plan, postfix: str | None) -> bool:
    """Prints the table of the issue's scenario; returns True when no order was lost.
    `postfix`: Postfix's version when it ran, else None (the issue's figure stands in)."""
    orders = plan.exec_orders
    print(
        f"\nwhile orders execute: {plan.exec_clients} CRLF clients, each waiting for its 250"
        f" before its next order, {orders} orders per run, {len(runs)} run(s)"
    )
    print(
        f"{'scenario':<38} {'orders/s':>8} {'acked':>13}{'ack p50':>10} {'ack p99':>10}"
        f"{'srv ms/o':>9} {'srv CPU':>7}{'executed':>9}"
    )
    keys = [key for key in EXECUTING_SCENARIOS if key in runs[0]]
    for key in keys:
        title = EXECUTING_SCENARIOS[key].format(version=postfix)
        print(executing_line(title, [run[key] for run in runs], orders))
    rate = {key: statistics.median(run[key].rate() for run in runs) for key in keys}
    reference = rate.get("postfix", POSTFIX_REFERENCE)
    if postfix is None:
        print(f"7 Postfix 3.7 (the issue's figure: a fixed reference) {POSTFIX_REFERENCE:>6.0f}")
    print(
        "(ack: the message's final `.` written -> its 250 read, all runs; srv ms/o, srv CPU:\n"
        " the server's CPU per order and its share of one core (wodmail executing: all its\n"
        " threads, not the programs it runs; Postfix: all its processes); executed: CREATEs\n"
        " done within the window, median)"
    )
    executing = rate["executing"]
    print(
        f"ratio wodmail executing / bare: {ratio(executing, rate['bare-8']):.2f},"
        f" / wodmail idle: {ratio(executing, rate['idle']):.2f},"
        f" / Postfix{'' if postfix else ' (fixed reference)'}: {ratio(executing, reference):.2f}"
    )
    complete = all(run[key].recorded == orders for run in runs for key in keys)
    met = complete and executing >= reference
    print(
        f"goal (CRLF durable intake while orders execute >= 1.0x Postfix's"
        f" {reference:.0f}/s): {'met' if met else 'NOT met'}"
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
        "--exec-clients", type=positive, default=EXEC_CLIENTS,
        help="concurrent clients while orders execute",
    )
    parser.add_argument(
        "--exec-orders", type=positive, default=2000,
        help="orders per measurement while orders execute",
    )
    parser.add_argument(
        "--exec-students", type=positive, default=EXEC_STUDENTS,
        help="students of the sandbox while orders execute (one pooled key each)",
    )
    parser.add_argument(
        "--only", choices=["intake", "executing"], default=None,
        help="measure only without execution (1-3) or only while orders execute (4-7)",
    )
    parser.add_argument("--no-postfix", action="store_true", help="do not run Postfix")
    parser.add_argument(
        "--before-src", type=Path, default=None,
        help="also measure 4 and 5 with wodmail from this src/ folder, in the same runs"
        " (`git archive REV src | tar -x -C DIR`, then DIR/src): before/after back to back",
    )
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
        help="run the wodmail servers under cProfile (main thread): writes PROFILE-portal.prof,"
        " -crlf.prof, -executing.prof, -idle.prof",
    )
    parser.add_argument("--serve", choices=["wodmail", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def plan_of(args: argparse.Namespace) -> tuple[Plan, str | None]:
    """The runs' plan, and why Postfix does not run (None: it does)."""
    sections = frozenset([args.only] if args.only else ["intake", "executing"])
    no_postfix = "--no-postfix" if args.no_postfix else postfix_missing()
    plan = Plan(sections, args.clients, args.orders, args.exec_clients, args.exec_orders,
                args.exec_students, no_postfix is None, args.profile, args.before_src)
    return plan, no_postfix


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_main(args.serve, args.state_dir, args.profile)
    plan, no_postfix = plan_of(args)
    with tempfile.TemporaryDirectory(prefix="wodmail-bench-", dir=args.workdir) as base:
        print(machine_line(Path(base)))
        if args.profile is not None:
            args.profile.parent.mkdir(parents=True, exist_ok=True)
            print("profiling the wodmail servers: their figures below are slowed down by it")
        if "executing" in plan.sections and no_postfix is not None:
            print(f"Postfix not run ({no_postfix}): the issue's"
                  f" {POSTFIX_REFERENCE:.0f}/s stands in")
        if "executing" in plan.sections:
            started = time.monotonic()
            keys = make_keys(Path(base) / "keys", plan.exec_students)
            plan = dataclasses.replace(plan, keys=keys)
            print(f"key pool files for the sandbox daemons: {plan.exec_students} RSA-3072 keys"
                  f" made in {time.monotonic() - started:.1f} s")
        runs = [asyncio.run(run_once(Path(base), plan)) for _ in range(args.repeat)]
    complete = True
    if "intake" in plan.sections:
        complete &= report_intake(runs, args.clients, args.orders)
    if "executing" in plan.sections:
        version = postfix_version() if plan.postfix else None
        complete &= report_executing(runs, plan, version)
    print(f"load avg at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
