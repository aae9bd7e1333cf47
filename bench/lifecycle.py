"""Lifecycle benchmark: how fast wodmail turns CREATE orders into ready students.

Everything runs in a sandbox under a temp dir (make_sandbox: homes, an accounts root where
the real `chpasswd -R` runs, stand-in portal and hub on loopback). The daemon (SMTP intake,
journal, dispatcher, the real lifecycle) runs in a child process, so its peak RSS is its
own; the stand-ins and the portal-style clients run here. The workshop is generated: three
templated notebooks of a few tens of KB and ~2 MB of pictures, like a real WoD workshop.

Figures, each with its goal:
1. CREATE latency over sequential orders (one student at a time): from the moment the
   portal-style client has handed its order over (sent it all and hung up on the greeting)
   to the moment the stand-in portal handled `PUT customer/C {"active": true}`.
2. Deploy time of the workshop into a fresh home (`deploy_workshop`, warm and first)
   against a plain `cp -a` of the same folder.
3. Makespan of one CREATE per student sent by concurrent portal-style clients: from the
   first send to the last `active` at the portal; every order must end `done`.
4. Peak RSS (VmHWM) of the daemon process.
5. The makespan of 3. again right after a restart: the daemon is stopped with a full key
   pool and a fresh process is started on the same state dir (as an upgrade on the morning
   of an event would); the burst is sent as soon as its port answers. Its key pool is the
   one kept on disk (`state_dir/keys`), so the goal is the same < 10 s, counted both from the
   first send and from the launch of the new process. With `--empty-pool`, the same again
   after a restart whose pool files were deleted first: what every restart cost before the
   pool was kept on disk (printed for comparison, under the same load).

6. The daemon's CPU per CREATE (utime+stime of its process, all threads) in both bursts,
   against the goal of <= 30 ms; each phase also splits it by thread, user and system.

With `--baseline REV` everything is measured twice, back to back on the same machine: first
with the daemon from commit REV (`git archive REV src`), then from this tree, followed by a
table of the two (CPU per CREATE, makespans, latency) and their ratios.

As in production, the daemon is up before the event: the measurements start once its
ssh key pool is full (the fill time is printed too), and again after the sequential phase.

Run: .venv/bin/python bench/lifecycle.py [--students 200] [--sequential 50] [--clients 20]
     [--baseline REV]
Exit status: 1 if an order failed or got lost, else 0 (a missed goal is only printed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from _cli import positive  # bench/ is on sys.path when a script runs

from wodmail.dev.sandbox import Sandbox, make_sandbox
from wodmail.dev.standins.mail_clients import send_portal_style_async
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import JournalReader

HOST = "127.0.0.1"
WORKSHOP = "WKSHP-Bench101"
BASE_ID = 1000  # BASESTDID: student N is API-DB student N + 1000
MAKESPAN_CUSTOMERS = 5000  # customer ids of the concurrent phase: 5001.. (no dedup merges)
RESTART_CUSTOMERS = 7000  # and of the burst after the restart: 7001..
EMPTY_POOL_CUSTOMERS = 9000  # and after the restart with an emptied pool (--empty-pool): 9001..
NOTEBOOK_SIZES = {  # name: target size in bytes
    "0-ReadMeFirst.ipynb": 22_000,
    "1-API-Basics.ipynb": 45_000,
    "2-Challenge.ipynb": 34_000,
}
PICTURE_SIZES = [620_000, 480_000, 350_000, 280_000, 190_000, 130_000]  # ~2 MB in all
ORDER_TIMEOUT_SECONDS = 30.0
MAKESPAN_TIMEOUT_SECONDS = 180.0
POLL_SECONDS = 0.005

GOAL_LATENCY_P50_MS = 150.0
GOAL_DEPLOY_RATIO = 3.0
GOAL_MAKESPAN_SECONDS = 10.0
GOAL_RSS_MIB = 200.0
GOAL_CPU_MS_PER_ORDER = 30.0  # daemon utime+stime per CREATE


# --- the workshop ----------------------------------------------------------------------------

FILLER_TEXT = (
    "the API returns a JSON document describing each resource and its links so a client "
    "can walk from one collection to the next without building URLs by hand while the "
    "server keeps track of sessions tokens and quotas for every student of the workshop"
)
FILLER_WORDS = tuple(FILLER_TEXT.split())


def filler(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(FILLER_WORDS) for _ in range(words)).capitalize() + "."


def markdown_cell(lines: list[str]) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": lines}


def code_cell(lines: list[str]) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": lines,
    }


def lesson_cells(rng: random.Random, lesson: int) -> list[dict[str, Any]]:
    """One lesson as WoD notebooks write them: prose, a mode switch, code using the vars."""
    return [
        markdown_cell([
            f"## Lesson {lesson}: calling the API as student{{{{ STDID }}}}\n",
            "\n",
            filler(rng, 60) + "\n",
            "\n",
            "{% if MODEWS == 'CHLG' %}**Challenge**: no hints here, you are on your own."
            "{% else %}Hint: read the cell below before running it.{% endif %}\n",
            "\n",
            filler(rng, 40),
        ]),
        code_cell([
            "import requests\n",
            'API = "{{ WODBEAPIURL }}/api"\n',
            "STUDENT = {{ STDID }}\n",
            f"lesson = {lesson}\n",
            'response = requests.get(f"{API}/students/{STUDENT}", timeout=10)\n',
            "print(response.status_code, response.json())",
        ]),
        code_cell([
            f"!curl -s {{{{ WODBEAPIURL }}}}/api/workshops | head -c {200 + lesson}",
        ]),
    ]


def notebook_json(title: str, size: int, seed: int) -> str:
    rng = random.Random(seed)
    cells = [
        markdown_cell([
            f"# {{{{ BRANDING }}}} Workshops-on-Demand: {title}\n",
            "\n",
            "Welcome student{{ STDID }} to {{ WORKSHOP }}. Your backend API is at "
            "{{ WODBEAPIURL }}.\n",
            "\n",
            "{% if MODEWS == 'CHLG' %}This is the **challenge** version: it is scored."
            "{% else %}Take your time: nothing is scored.{% endif %}",
        ])
    ]
    lesson = 0
    while True:
        lesson += 1
        cells.extend(lesson_cells(rng, lesson))
        notebook = {
            "cells": cells,
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python",
                               "name": "python3"},
                "language_info": {"name": "python", "version": "3.11.9"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        if len(text) >= size:
            return text


@dataclass
class WorkshopFiles:
    folder: Path
    notebooks: dict[str, int]  # name: bytes
    pictures: int
    picture_bytes: int

    def total_bytes(self) -> int:
        return sum(self.notebooks.values()) + self.picture_bytes


def write_workshop(folder: Path) -> WorkshopFiles:
    """A notebook-only workshop of realistic size, deterministic from run to run."""
    folder.mkdir(parents=True)
    notebooks = {}
    for seed, (name, size) in enumerate(NOTEBOOK_SIZES.items()):
        title = name.removesuffix(".ipynb").split("-", 1)[1].replace("-", " ")
        text = notebook_json(title, size, seed)
        (folder / name).write_text(text, encoding="utf-8")
        notebooks[name] = len(text.encode())
    pictures = folder / "pictures"
    pictures.mkdir()
    rng = random.Random(42)
    png_signature = b"\x89PNG\r\n\x1a\n"
    for index, size in enumerate(PICTURE_SIZES):
        data = png_signature + rng.randbytes(size - len(png_signature))
        (pictures / f"figure-{index + 1}.png").write_bytes(data)
    return WorkshopFiles(folder, notebooks, len(PICTURE_SIZES), sum(PICTURE_SIZES))


def register_workshop(sandbox: Sandbox, students: range) -> None:
    """The workshop in the stand-in portal, and the customers of the concurrent phase."""
    sandbox.portal.add_workshop(
        notebook=WORKSHOP, name="Bench workshop", range=[students.start, students.stop - 1],
        capacity=len(students),
    )
    for n in students:
        for base in (MAKESPAN_CUSTOMERS, RESTART_CUSTOMERS, EMPTY_POOL_CUSTOMERS):
            sandbox.portal.add_customer(
                base + n, notebook=WORKSHOP, studentId=n + sandbox.base_id,
                email=f"burst{base + n}@example.com",
            )


# --- deploy against cp -a (in this process) --------------------------------------------------


@dataclass
class DeployFigures:
    first: float
    warm: list[float]
    cp_first: float
    cp: list[float]
    files: int
    cpu: tuple[float, float]  # a warm deploy's mean user and system CPU seconds

    def ratio(self) -> float:
        return statistics.median(self.warm) / statistics.median(self.cp)


def measure_deploy(sandbox: Sandbox, runs: int) -> DeployFigures:
    """deploy_workshop into fresh homes vs `cp -a`, interleaved; the first of each apart.

    Each deploy gets a new Renderer (the lifecycle builds one per CREATE), built outside
    the timed part. The compiled templates are cached process-wide after the first deploy.
    """
    from wodmail.host.deploy import deploy_workshop
    from wodmail.lifecycle.backend import Backend
    from wodmail.lifecycle.workshop import resolve_workshop

    config = sandbox.config(portal={"url": None}, hub={"url": None})  # no clients to close
    backend = Backend.from_config(config)
    workshop = asyncio.run(resolve_workshop(config, WORKSHOP, WORKSHOP, "WKSHP", None))
    homes = sandbox.root / "deploy-homes"
    deploys: list[float] = []
    copies: list[float] = []
    cpu: list[tuple[float, float]] = []
    files = 0
    for run in range(runs + 1):
        home = homes / f"deploy-{run}"
        home.mkdir(parents=True)
        renderer = backend.renderer(workshop, 1, "bench-password")
        started, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_THREAD)
        result = deploy_workshop(workshop.folder, home, renderer)
        deploys.append(time.perf_counter() - started)
        done = resource.getrusage(resource.RUSAGE_THREAD)
        cpu.append((done.ru_utime - used.ru_utime, done.ru_stime - used.ru_stime))
        files = result.files
        copy_home = homes / f"cp-{run}"
        copy_home.mkdir()
        started = time.perf_counter()
        subprocess.run(["cp", "-a", str(workshop.folder), str(copy_home / WORKSHOP)], check=True)
        copies.append(time.perf_counter() - started)
    check_rendered(homes / "deploy-0" / WORKSHOP)
    shutil.rmtree(homes)
    warm = cpu[1:]
    # The mean: the kernel may count a thread's CPU in whole ticks, longer than one deploy.
    mean_cpu = (statistics.fmean(u for u, _ in warm), statistics.fmean(s for _, s in warm))
    return DeployFigures(deploys[0], deploys[1:], copies[0], copies[1:], files, mean_cpu)


def check_rendered(folder: Path) -> None:
    """The deployed notebooks are JSON with the variables filled in: the bench is honest."""
    for name in NOTEBOOK_SIZES:
        text = (folder / name).read_text(encoding="utf-8")
        json.loads(text)
        if "{{" in text or "student1 " not in text:
            raise RuntimeError(f"{name} was not rendered as expected")


# --- the daemon (child process) --------------------------------------------------------------


def announce(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def wait_pool_full(backend: Any) -> None:
    while len(backend.keys) < backend.keys.size:  # noqa: ASYNC110 - KeyPool has no event
        await asyncio.sleep(0.05)


async def serve(config_path: Path, log_stream: TextIO) -> None:
    """Child: run the daemon; answer `pool` (wait for a full key pool) until `stop` or EOF."""
    from wodmail.config import load_config
    from wodmail.lifecycle.backend import Backend
    from wodmail.lifecycle.verbs import LifecycleRunner
    from wodmail.logs import configure_logging
    from wodmail.service import Daemon

    configure_logging(0, stream=log_stream)
    config = load_config(config_path)
    backend = Backend.from_config(config)
    pool_started = time.monotonic()
    daemon = Daemon(config, LifecycleRunner(backend))  # LifecycleRunner starts the key pool
    await daemon.start()
    keypool = [t.native_id for t in threading.enumerate() if t.name == "wodmail-keypool"]
    announce({"port": daemon.port, "keys": backend.keys.size, "bits": backend.keys.bits,
              "keypool_tid": keypool[0] if keypool else None})
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    while (line := (await commands.readline()).decode().strip()) not in ("", "stop"):
        if line == "pool":
            asked = time.monotonic()
            await wait_pool_full(backend)
            now = time.monotonic()
            announce({"waited": now - asked, "since_start": now - pool_started})
    await daemon.stop(30)


def name_kernel_threads() -> None:
    """Gives each thread started from now on its Python name in the kernel (/proc/.../comm),
    for the parent's CPU by thread (CPython 3.11 leaves them all `python`)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named(thread: threading.Thread) -> None:
        prctl(15, thread.name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        bootstrap(thread)

    threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]


def serve_main(config_path: Path, profile: Path | None) -> int:
    name_kernel_threads()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    # INFO-level JSON logs, rendered as in production, then thrown away.
    with open(os.devnull, "w") as devnull:
        asyncio.run(serve(config_path, devnull))
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    return 0


class DaemonProcess:
    """The parent's handle on the child daemon."""

    def __init__(self, process: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.process = process
        self.port: int = hello["port"]
        self.pool_size: int = hello["keys"]
        self.key_bits: int = hello["bits"]
        self.keypool_tid: int | None = hello["keypool_tid"]

    @classmethod
    async def start(
        cls, config_path: Path, profile: Path | None, daemon_src: Path | None = None
    ) -> DaemonProcess:
        command = [sys.executable, __file__, "--serve", str(config_path)]
        if profile is not None:
            command += ["--profile", str(profile)]
        env = None
        if daemon_src is not None:  # another commit's wodmail, to compare back to back
            env = {**os.environ, "PYTHONPATH": str(daemon_src)}
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        return cls(process, await cls._read(process))

    @staticmethod
    async def _read(process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            await process.wait()
            raise RuntimeError(f"the daemon exited (status {process.returncode})")
        message: dict[str, Any] = json.loads(line)
        return message

    async def wait_pool_full(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(b"pool\n")
        await self.process.stdin.drain()
        return await self._read(self.process)

    def cpu(self) -> CpuSample:
        pid = self.process.pid
        own, children = _proc_cpu(Path(f"/proc/{pid}/stat"))
        keypool = 0.0
        if self.keypool_tid is not None:
            keypool = _proc_cpu(Path(f"/proc/{pid}/task/{self.keypool_tid}/stat"))[0]
        return CpuSample(time.monotonic(), own, children, keypool, time.process_time(),
                         threads=_thread_cpu(pid))

    def peak_rss_mib(self) -> float:
        """VmHWM: the process's peak resident set, all threads."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else float("nan")

    async def stop(self) -> None:
        if self.process.returncode is not None:
            return
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(b"stop\n")
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it is already going
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()


@dataclass
class CpuSample:
    """CPU seconds so far: the daemon (all threads), its key pool thread, the programs it ran
    and waited for (chpasswd, setfacl), and this bench process (stand-ins and clients)."""

    wall: float
    daemon: float
    daemon_children: float
    keypool: float
    bench: float
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)  # when sampled
    # kind of thread: (user, system) CPU seconds
    threads: dict[str, tuple[float, float]] = field(default_factory=dict)

    def since(self, start: CpuSample) -> CpuSample:
        threads = {}
        for kind, (user, system) in self.threads.items():
            user0, system0 = start.threads.get(kind, (0.0, 0.0))
            threads[kind] = (user - user0, system - system0)
        return CpuSample(self.wall - start.wall, self.daemon - start.daemon,
                         self.daemon_children - start.daemon_children,
                         self.keypool - start.keypool, self.bench - start.bench, self.load,
                         threads)


def _thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of the daemon's live threads by kind (their name without
    its number):
    the event loop (`main`), the journal's writer, the default executor's workers
    (`asyncio`), the key pool... Threads that ended (a child watcher per program run) are
    only in the process's total."""
    kinds: dict[str, tuple[float, float]] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        kind = "main" if task.name == str(pid) else re.sub(r"[_-]?\d+$", "", name)
        user, system = kinds.get(kind, (0.0, 0.0))
        kinds[kind] = (user + int(fields[11]) / ticks, system + int(fields[12]) / ticks)
    return kinds


def _proc_cpu(stat_path: Path) -> tuple[float, float]:
    """(user + system, children's user + system) in seconds, from a /proc stat file."""
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks


# --- watching the portal and the journal -----------------------------------------------------


class ActiveWatcher:
    """When the stand-in portal handled each `PUT customer/C {"active": true}`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._portal = sandbox.portal
        self._seen = len(self._portal.calls)
        self._prefix = self._portal.base_path + "/customer/"
        self.active_at: dict[int, float] = {}

    def poll(self) -> None:
        calls = self._portal.calls
        for call in calls[self._seen:]:
            if (call.method == "PUT" and call.path.startswith(self._prefix)
                    and call.json == {"active": True}):
                self.active_at[int(call.path.removeprefix(self._prefix))] = call.at
        self._seen = len(calls)

    async def wait_for(self, customers: set[int], deadline: float) -> bool:
        while not customers <= self.active_at.keys():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
            self.poll()
        return True


def jobs_after(reader: JournalReader, last_id: int) -> list[Job]:
    return [job for job in reader.list_jobs(newest_first=False) if job.id > last_id]


async def wait_finished(reader: JournalReader, last_id: int, count: int, deadline: float) -> None:
    """Until `count` orders after `last_id` are finished (or the deadline)."""
    while time.monotonic() < deadline:
        jobs = jobs_after(reader, last_id)
        if len(jobs) >= count and all(job.state.finished for job in jobs):
            return
        await asyncio.sleep(0.02)


def last_job_id(reader: JournalReader) -> int:
    jobs = reader.list_jobs(limit=1)
    return jobs[0].id if jobs else 0


def failures(jobs: list[Job]) -> list[str]:
    return [
        f"job {job.id} student {job.student}: {job.state.value} {job.reason or ''}".rstrip()
        for job in jobs
        if job.state is not JobState.DONE
    ]


def subject(student: int, customer: int) -> str:
    return f"CREATE {student} {customer} participant{customer}@example.com"


# --- sequential CREATEs: latency -------------------------------------------------------------


@dataclass
class LatencyFigures:
    latencies: list[float]  # seconds, send handed over -> active at the portal
    intake: list[float]  # handed over -> recorded in the journal (received_at, wall clock)
    queued: list[float]  # committed -> started by the dispatcher
    steps: dict[str, list[float]]  # step name (digits as N) -> ms of each order
    unaccounted: list[float]  # latency not in intake, queue or a step before `active`
    failed: list[str] = field(default_factory=list)
    cpu: CpuSample | None = None


async def sequential_creates(
    daemon: DaemonProcess, sandbox: Sandbox, reader: JournalReader, students: list[int]
) -> LatencyFigures:
    """One CREATE at a time (student N, customer N); each waits for the previous to finish."""
    watcher = ActiveWatcher(sandbox)
    first_id = last_job_id(reader)
    cpu_start = daemon.cpu()
    handed: dict[int, tuple[float, float]] = {}  # student: (monotonic, wall clock)
    failed: list[str] = []
    for n in students:
        await send_portal_style_async(HOST, daemon.port, subject(n, n), WORKSHOP)
        handed[n] = (time.monotonic(), time.time())
        deadline = time.monotonic() + ORDER_TIMEOUT_SECONDS
        if not await watcher.wait_for({n}, deadline):
            failed.append(f"student {n}: no `active` at the portal after "
                          f"{ORDER_TIMEOUT_SECONDS:.0f} s; sequential phase stopped there")
            break
        await wait_finished(reader, first_id, len(handed), deadline)
    cpu = daemon.cpu().since(cpu_start)
    jobs = jobs_after(reader, first_id)
    failed += failures(jobs)
    figures = LatencyFigures([], [], [], {}, [], failed, cpu)
    for job in jobs:
        if job.student in watcher.active_at and job.student in handed:
            add_breakdown(figures, job, handed[job.student], watcher.active_at[job.student])
    return figures


def add_breakdown(
    figures: LatencyFigures, job: Job, handed: tuple[float, float], active_at: float
) -> None:
    sent_mono, sent_wall = handed
    latency = active_at - sent_mono
    intake = job.received_at - sent_wall
    queued = (job.started_at or job.received_at) - job.received_at
    figures.latencies.append(latency)
    figures.intake.append(intake)
    figures.queued.append(queued)
    in_steps = 0.0
    for name, step_ms in step_times(job):
        figures.steps.setdefault(name, []).append(step_ms)
        in_steps += step_ms / 1000 if name != "hub start" else 0.0
    figures.unaccounted.append(latency - intake - queued - in_steps)


def step_times(job: Job) -> list[tuple[str, float]]:
    """(name with digits as N, ms) of each finished step of the order."""
    return [
        (re.sub(r"\d+", "N", step["name"]), step["ms"])
        for step in job.result.get("steps", [])
        if "ms" in step
    ]


def step_table(jobs: list[Job]) -> dict[str, list[float]]:
    table: dict[str, list[float]] = {}
    for job in jobs:
        for name, step_ms in step_times(job):
            table.setdefault(name, []).append(step_ms)
    return table


def print_steps(steps: dict[str, list[float]]) -> None:
    print(f"     {'step':<42} {'median':>9} {'p90':>9} {'max':>9}")
    for name, durations in steps.items():
        print(f"     {name:<42} {statistics.median(durations):6.1f} ms"
              f"{percentile(durations, 90):6.1f} ms{max(durations):6.1f} ms")


# --- concurrent CREATEs: makespan ------------------------------------------------------------


@dataclass
class MakespanFigures:
    orders: int
    clients: int
    seconds: float | None  # first send -> last `active`; None when some never came
    sent_seconds: float  # first send -> every order handed over
    per_order: list[float]  # handed over -> active, for each order
    failed: list[str]
    cpu: CpuSample
    steps: dict[str, list[float]]


async def portal_client(
    port: int, todo: Iterator[int], handed: dict[int, float], base: int
) -> None:
    for n in todo:
        await send_portal_style_async(HOST, port, subject(n, base + n), WORKSHOP)
        handed[base + n] = time.monotonic()


async def concurrent_creates(
    daemon: DaemonProcess, sandbox: Sandbox, reader: JournalReader, students: list[int],
    clients: int, base: int = MAKESPAN_CUSTOMERS,
) -> MakespanFigures:
    watcher = ActiveWatcher(sandbox)
    first_id = last_job_id(reader)
    customers = {base + n for n in students}
    handed: dict[int, float] = {}
    todo = iter(students)  # shared: each client takes the next student
    cpu_start = daemon.cpu()
    started = time.monotonic()
    await asyncio.gather(
        *(portal_client(daemon.port, todo, handed, base) for _ in range(clients))
    )
    sent_seconds = time.monotonic() - started
    deadline = started + MAKESPAN_TIMEOUT_SECONDS
    all_active = await watcher.wait_for(customers, deadline)
    cpu = daemon.cpu().since(cpu_start)  # sampled at the last `active` (or the deadline)
    await wait_finished(reader, first_id, len(students), deadline)
    jobs = jobs_after(reader, first_id)
    failed = failures(jobs)
    if len(jobs) < len(students):
        failed.append(f"{len(students) - len(jobs)} order(s) missing from the journal")
    done = [c for c in customers if c in watcher.active_at]
    seconds = max(watcher.active_at[c] for c in done) - started if all_active else None
    per_order = [watcher.active_at[c] - handed[c] for c in done if c in handed]
    return MakespanFigures(len(students), clients, seconds, sent_seconds, per_order, failed, cpu,
                           step_table(jobs))


# --- the whole run ---------------------------------------------------------------------------


@dataclass
class DaemonFigures:
    key_bits: int
    pool_size: int
    pool_fill: float
    pool_refill: float
    latency: LatencyFigures
    makespan: MakespanFigures
    daemon_rss_mib: float
    restart: RestartFigures
    restart_empty: RestartFigures | None


@dataclass
class RestartFigures:
    keys_on_disk: int  # pooled keys the new process found in state_dir/keys
    ready: float  # launch of the new process -> its SMTP port answered
    makespan: MakespanFigures
    since_launch: float | None  # launch -> last `active`


async def restart_creates(
    sandbox: Sandbox, config_path: Path, journal: Path, args: argparse.Namespace,
    base: int = RESTART_CUSTOMERS, empty_pool: bool = False,
) -> RestartFigures:
    """Phase 5: a fresh daemon process on the state dir the first one left, then the burst
    (with `empty_pool`, the pool's files are deleted first, as no earlier process left any)."""
    from wodmail.config import load_config

    folder = load_config(config_path).state_dir / "keys"
    if empty_pool:
        for stored in folder.glob("*.pem"):
            stored.unlink()
    keys = len(list(folder.glob("*.pem")))
    launched = time.monotonic()
    daemon = await DaemonProcess.start(config_path, None, args.daemon_src)
    ready = time.monotonic() - launched
    try:
        reader = JournalReader(journal)
        burst = list(range(1, args.students + 1))
        makespan = await concurrent_creates(daemon, sandbox, reader, burst, args.clients, base)
    finally:
        await daemon.stop()
    since_launch = None
    if makespan.seconds is not None:
        since_launch = ready + makespan.seconds  # the burst starts the moment the port answers
    return RestartFigures(keys, ready, makespan, since_launch)


async def run_daemon_phases(
    sandbox: Sandbox, config_path: Path, args: argparse.Namespace
) -> DaemonFigures:
    from wodmail.config import load_config

    journal = load_config(config_path).journal_path()
    daemon = await DaemonProcess.start(config_path, args.profile, args.daemon_src)
    try:
        fill = await daemon.wait_pool_full()
        reader = JournalReader(journal)
        sequential = list(range(1, args.sequential + 1))
        latency = await sequential_creates(daemon, sandbox, reader, sequential)
        refill = await daemon.wait_pool_full()
        burst = list(range(1, args.students + 1))
        makespan = await concurrent_creates(daemon, sandbox, reader, burst, args.clients)
        rss = daemon.peak_rss_mib()
        await daemon.wait_pool_full()  # as the night before an event: a full pool, then a stop
    finally:
        await daemon.stop()
    restart = await restart_creates(sandbox, config_path, journal, args)
    empty = None
    if args.empty_pool:
        empty = await restart_creates(sandbox, config_path, journal, args,
                                      EMPTY_POOL_CUSTOMERS, empty_pool=True)
    return DaemonFigures(daemon.key_bits, daemon.pool_size, fill["since_start"],
                         refill["waited"], latency, makespan, rss, restart, empty)


# --- the report ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 50 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"machine: nproc {len(os.sched_getaffinity(0))} ({os.cpu_count()} CPUs), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load avg {load[0]:.2f} {load[1]:.2f}"
    )


def workshop_lines(files: WorkshopFiles) -> list[str]:
    notebooks = ", ".join(f"{name} {size / 1024:.1f} KiB" for name, size in files.notebooks.items())
    return [
        f"workshop: {WORKSHOP} (generated, notebook-only): {notebooks}; "
        f"{files.pictures} pictures/*.png {files.picture_bytes / 2**20:.2f} MiB; "
        f"{files.total_bytes() / 2**20:.2f} MiB in all",
        "  notebooks use {{ STDID }}, {{ WODBEAPIURL }} (itself a template: "
        "http://{{ WODBEFQDN }}:8000), {{ BRANDING }}, {{ WORKSHOP }}, "
        "{% if MODEWS == 'CHLG' %}",
    ]


def report_latency(figures: LatencyFigures) -> bool:
    values = figures.latencies
    print(f"\n1. CREATE latency, {len(values)} sequential orders "
          "(portal-style client handed the order over -> portal got PUT customer/C active)")
    if not values:
        print("   no order completed: MISS")
        return False
    p50 = statistics.median(values)
    print(f"   p50 {ms(p50)}  p99 {ms(percentile(values, 99))}  "
          f"min {ms(min(values))}  max {ms(max(values))}")
    met = p50 * 1000 < GOAL_LATENCY_P50_MS
    print(f"   goal p50 < {GOAL_LATENCY_P50_MS:.0f} ms: {verdict(met)}")
    print(f"   where it goes (medians): handed over -> recorded in the journal "
          f"{ms(statistics.median(figures.intake))}, queued "
          f"{ms(statistics.median(figures.queued))}, in no step (progress saves, scheduling) "
          f"{ms(statistics.median(figures.unaccounted))}; steps:")
    print_steps(figures.steps)
    if figures.cpu is not None:
        print(f"   {cpu_line(figures.cpu, len(values))}")
    return met


def cpu_line(cpu: CpuSample, orders: int) -> str:
    per = 1000 / orders if orders else 0.0
    return (
        f"CPU over {cpu.wall:.1f} s: daemon {cpu.daemon:.1f} s (key pool thread "
        f"{cpu.keypool:.1f} s), its programs (chpasswd, setfacl) {cpu.daemon_children:.1f} s, "
        f"bench process (stand-ins, clients) {cpu.bench:.1f} s; daemon without key pool "
        f"+ programs: {(cpu.daemon - cpu.keypool + cpu.daemon_children) * per:.0f} ms/order\n"
        f"   daemon CPU per order (utime+stime of the daemon process, all threads): "
        f"{cpu.daemon * per:.1f} ms, without its key pool thread "
        f"{(cpu.daemon - cpu.keypool) * per:.1f} ms   goal <= {GOAL_CPU_MS_PER_ORDER:.0f} ms: "
        f"{verdict(cpu.daemon * per <= GOAL_CPU_MS_PER_ORDER)}; load average at the end "
        f"{' '.join(f'{v:.2f}' for v in cpu.load)}\n"
        f"   by thread, ms/order (user + system): "
        + ", ".join(f"{kind} {(user + system) * per:.1f} ({user * per:.1f} + {system * per:.1f})"
                    for kind, (user, system)
                    in sorted(cpu.threads.items(), key=lambda kv: -sum(kv[1])))
        + f", threads that ended {(cpu.daemon - sum(map(sum, cpu.threads.values()))) * per:.1f}"
    )


def report_cpu(daemon: DaemonFigures) -> bool:
    """The CPU goal, over both bursts (the sequential phase is printed, not judged: its few
    orders leave the idle daemon's own ticks in the figure)."""
    bursts = [("burst", daemon.makespan), ("after a restart", daemon.restart.makespan)]
    figures = [(name, cpu_per_order(b.cpu, b.orders)) for name, b in bursts]
    met = all(value is not None and value <= GOAL_CPU_MS_PER_ORDER for _, value in figures)
    shown = ", ".join(f"{name} {value:.1f} ms" for name, value in figures if value is not None)
    print(f"\n6. Daemon CPU per CREATE (utime+stime, all threads): {shown}   "
          f"goal <= {GOAL_CPU_MS_PER_ORDER:.0f} ms in both bursts: {verdict(met)}")
    return met


def report_deploy(figures: DeployFigures) -> bool:
    ratio = figures.ratio()
    print(f"\n2. Deploy of {WORKSHOP} into a fresh home ({figures.files} files), "
          f"median of {len(figures.warm)} runs each")
    print(f"   deploy_workshop warm {ms(statistics.median(figures.warm))} "
          f"(first, templates not yet compiled: {ms(figures.first)})")
    user, system = figures.cpu
    print(f"   a warm deploy's CPU (mean): user {ms(user)}, system {ms(system)} (the system "
          "part is the file system's; see --workdir)")
    print(f"   cp -a              {ms(statistics.median(figures.cp))} "
          f"(first: {ms(figures.cp_first)}; includes starting cp)")
    print(f"   ratio {ratio:.2f}x   goal <= {GOAL_DEPLOY_RATIO:.0f}x: "
          f"{verdict(ratio <= GOAL_DEPLOY_RATIO)}")
    return ratio <= GOAL_DEPLOY_RATIO


def report_makespan(figures: MakespanFigures) -> bool:
    print(f"\n3. Makespan of {figures.orders} CREATEs (one per student) from "
          f"{figures.clients} concurrent portal-style clients (first send -> last active)")
    met = figures.seconds is not None and figures.seconds < GOAL_MAKESPAN_SECONDS
    if figures.seconds:
        rate = figures.orders / figures.seconds
        print(f"   makespan {figures.seconds:.2f} s   ({rate:.1f} CREATE/s)")
    else:
        print(f"   makespan: not every order reached `active` within "
              f"{MAKESPAN_TIMEOUT_SECONDS:.0f} s")
    print(f"   all orders handed over after {figures.sent_seconds:.2f} s; per order, handed "
          f"over -> active: p50 {ms(statistics.median(figures.per_order or [0]))}, "
          f"max {ms(max(figures.per_order or [0]))}")
    print(f"   {cpu_line(figures.cpu, figures.orders)}")
    print("   steps under this load:")
    print_steps(figures.steps)
    print(f"   goal < {GOAL_MAKESPAN_SECONDS:.0f} s on {len(os.sched_getaffinity(0))} cores, "
          f"every order done: {verdict(met and not figures.failed)}")
    return met and not figures.failed


def report_restart(figures: RestartFigures, label: str = "5.") -> bool:
    burst = figures.makespan
    print(f"\n{label} Makespan of {burst.orders} CREATEs from {burst.clients} clients right "
          f"after a restart (fresh process, same state dir; {figures.keys_on_disk} pooled keys "
          "on disk)")
    print(f"   new process answered on its port {figures.ready:.2f} s after launch")
    met = figures.since_launch is not None and figures.since_launch < GOAL_MAKESPAN_SECONDS
    if burst.seconds is not None and figures.since_launch is not None:
        print(f"   makespan {burst.seconds:.2f} s from the first send, "
              f"{figures.since_launch:.2f} s from the launch")
    else:
        print(f"   not every order reached `active` within {MAKESPAN_TIMEOUT_SECONDS:.0f} s")
    print(f"   {cpu_line(burst.cpu, burst.orders)}")
    print(f"   goal < {GOAL_MAKESPAN_SECONDS:.0f} s from the launch, every order done: "
          f"{verdict(met and not burst.failed)}")
    return met and not burst.failed


def report_rss(daemon_mib: float) -> bool:
    bench_mib = _own_peak_rss_mib()
    print("\n4. Peak RSS")
    print(f"   daemon process (VmHWM) {daemon_mib:.1f} MiB   goal < {GOAL_RSS_MIB:.0f} MiB: "
          f"{verdict(daemon_mib < GOAL_RSS_MIB)}")
    print(f"   (this bench process: stand-ins + clients + deploy runs, {bench_mib:.1f} MiB)")
    return daemon_mib < GOAL_RSS_MIB


def _own_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(files: WorkshopFiles, deploy: DeployFigures, daemon: DaemonFigures) -> bool:
    """Prints every figure; returns True when no order failed."""
    for line in workshop_lines(files):
        print(line)
    print(f"key pool: {daemon.pool_size} RSA-{daemon.key_bits} keys ready "
          f"{daemon.pool_fill:.1f} s after the daemon started; refilled in "
          f"{daemon.pool_refill:.1f} s after the sequential phase")
    met = [
        report_latency(daemon.latency),
        report_deploy(deploy),
        report_makespan(daemon.makespan),
        report_rss(daemon.daemon_rss_mib),
        report_restart(daemon.restart),
        report_cpu(daemon),
    ]
    failed = daemon.latency.failed + daemon.makespan.failed + daemon.restart.makespan.failed
    if daemon.restart_empty is not None:
        print("\n   for comparison, the pool emptied before the restart (as every restart did "
              "before the pool was kept on disk):")
        report_restart(daemon.restart_empty, "5b.")
        failed += daemon.restart_empty.makespan.failed
    if failed:
        print(f"\nFAILED ORDERS ({len(failed)}):")
        for line in failed[:50]:
            print(f"   {line}")
    print(f"\ngoals met: {sum(met)}/{len(met)}")
    return not failed


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=positive, default=200,
                        help="students in the range, and CREATEs in the concurrent phase")
    parser.add_argument("--sequential", type=positive, default=50,
                        help="sequential CREATEs for the latency figure")
    parser.add_argument("--clients", type=positive, default=20, help="concurrent clients")
    parser.add_argument("--deploy-runs", type=positive, default=15,
                        help="deploys and copies for the deploy figure (plus one first each)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the sandbox goes (default: a temp dir). The homes' file "
                        "system sets the kernel's part of a CREATE: measure on the kind the "
                        "students' homes live on")
    parser.add_argument("--empty-pool", action="store_true",
                        help="also measure a restart whose key pool files were deleted first")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the daemon under cProfile (main thread) and write the stats")
    parser.add_argument("--daemon-src", type=Path, default=None,
                        help="run the daemon from this src/ folder (e.g. another commit's, "
                        "from `git archive REV src | tar -x -C DIR`) to compare back to back")
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="measure the daemon from this commit first (git archive of its "
                        "src/), then this tree's, and print the two side by side")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve_main(args.serve, args.profile)
    if args.sequential > args.students:
        raise SystemExit(f"--sequential ({args.sequential}) exceeds --students ({args.students})")
    from wodmail.logs import configure_logging

    print(machine_line())
    with open(os.devnull, "w") as devnull:
        configure_logging(0, stream=devnull)  # the deploy runs here log as the daemon does
        if args.baseline is None:
            if args.daemon_src is not None:
                print(f"daemon from {args.daemon_src}")
            return 0 if report(*measure(args, args.daemon_src)) else 1
        with tempfile.TemporaryDirectory(prefix="wodmail-baseline-", dir=args.workdir) as old:
            source = baseline_source(args.baseline, Path(old))
            print(f"\n=== baseline: the daemon from {args.baseline} "
                  f"({source.parent.name}), measured first")
            before = measure(args, source)
            ok_before = report(*before)
            print(f"\n=== this tree: the daemon from {args.daemon_src or 'the working tree'}, "
                  "measured right after")
            after = measure(args, args.daemon_src)
            ok_after = report(*after)
        report_against_baseline(args.baseline, before[2], after[2])
    return 0 if ok_before and ok_after else 1


def measure(
    args: argparse.Namespace, daemon_src: Path | None
) -> tuple[WorkshopFiles, DeployFigures, DaemonFigures]:
    """Every figure of one daemon (from `daemon_src`, or this tree), in a sandbox of its own."""
    with tempfile.TemporaryDirectory(prefix="wodmail-lifecycle-", dir=args.workdir) as base:
        students = range(1, args.students + 1)
        sandbox = make_sandbox(Path(base) / "sandbox", students=students, base_id=BASE_ID)
        try:
            files = write_workshop(sandbox.notebooks / WORKSHOP)
            register_workshop(sandbox, students)
            config_path = Path(base) / "wodmail.yml"
            config_path.write_text(yaml.safe_dump(sandbox.config_data()))
            deploy = measure_deploy(sandbox, args.deploy_runs)
            phases = argparse.Namespace(**{**vars(args), "daemon_src": daemon_src})
            figures = asyncio.run(run_daemon_phases(sandbox, config_path, phases))
        finally:
            sandbox.close()
    return files, deploy, figures


def baseline_source(revision: str, folder: Path) -> Path:
    """`src/` of `revision` of this repository, unpacked into `folder` (its name: the commit)."""
    repository = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(repository), "rev-parse", "--short", revision],
                            capture_output=True, text=True, check=True).stdout.strip()
    target = folder / commit
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(repository), "archive", commit, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def report_against_baseline(revision: str, before: DaemonFigures, after: DaemonFigures) -> None:
    print(f"\n=== against the baseline ({revision}), same machine, back to back")
    print(f"   {'figure':58s} {'baseline':>10s} {'this tree':>10s} {'ratio':>7s}")
    rows = [
        ("daemon CPU per CREATE, sequential (ms)", cpu_per_order(before.latency.cpu,
         len(before.latency.latencies)), cpu_per_order(after.latency.cpu,
         len(after.latency.latencies))),
        ("daemon CPU per CREATE, burst of 200 (ms)",
         cpu_per_order(before.makespan.cpu, before.makespan.orders),
         cpu_per_order(after.makespan.cpu, after.makespan.orders)),
        ("daemon CPU per CREATE, burst after a restart (ms)",
         cpu_per_order(before.restart.makespan.cpu, before.restart.makespan.orders),
         cpu_per_order(after.restart.makespan.cpu, after.restart.makespan.orders)),
        ("makespan of the burst (s)", before.makespan.seconds, after.makespan.seconds),
        ("makespan after a restart, from the launch (s)", before.restart.since_launch,
         after.restart.since_launch),
        ("sequential CREATE latency p50 (ms)",
         1000 * statistics.median(before.latency.latencies or [math.nan]),
         1000 * statistics.median(after.latency.latencies or [math.nan])),
    ]
    for name, old, new in rows:
        if old is None or new is None:
            print(f"   {name:58s} {'-':>10s} {'-':>10s}")
            continue
        print(f"   {name:58s} {old:10.1f} {new:10.1f} {new / old:6.2f}x")


def cpu_per_order(cpu: CpuSample | None, orders: int) -> float | None:
    """The daemon process's utime+stime per order, in ms (all its threads)."""
    if cpu is None or not orders:
        return None
    return cpu.daemon * 1000 / orders


if __name__ == "__main__":
    sys.exit(main())
