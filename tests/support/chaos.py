"""Chaos: SIGKILL the real `wodmail serve` at random moments under a stream of orders, and
count what a participant would notice.

A sandbox (make_sandbox: homes, accounts root, stand-in portal and hub on loopback) and the
real daemon (`python -m wodmail.cli serve`, a child process on a fixed port). A sender sends
rounds of one CREATE per student, then one CLEANUP per student, each order with its own
Message-ID and a customer of its own, re-sending an order (same Message-ID) until it gets its
250. Meanwhile the daemon is SIGKILLed at random moments and started again, `--kills`
times; then it is left to finish everything.

What is counted, each a defect when not 0:
- lost: an order acknowledged (250) that is not `done` in the journal at the end;
- doubled: a Message-ID recorded as more than one order;
- active sent twice: a customer told `active` more than once (`PUT customer/C active`);
- cleaned sent twice, or never: the same for each CLEANUP's `cleaned`;
- completion figures overwritten: a CLEANUP's customer given more than one
  `completionPercentage`, or 0 (the participant always runs a cell once told `active`);
- redeployed after active: a post-copy hook ran for an order's home after the portal had
  told that order's participant `active` (the hook and the portal write one shared event
  log; an order is known by its password);
- passwords the portal saw that no order ended with (an order that handed out two);
- `PRAGMA integrity_check` not ok.

Run: .venv/bin/python bench/chaos.py [--kills 100] [--students 20] [--rounds 5] [--rate 2]
[--seed S] (a few minutes: orders are sent at a steady `--rate` so the kills keep landing in
the middle of orders); tests/e2e/test_crash_stream.py runs a small version in CI. Exit 1 on any
defect. This module is the harness; bench/chaos.py is its command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wodmail.dev.processes import stop_process
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox
from wodmail.dev.standins._base import StandinRequest
from wodmail.dev.standins.mail_clients import send_smtplib
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader

WS = SAMPLE_WORKSHOP
BASE_ID = 100
HOST = "127.0.0.1"
FINISH_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class Planned:
    verb: str
    student: int
    customer: int

    @property
    def message_id(self) -> str:
        return f"<chaos-{self.verb.lower()}-{self.customer}@bench.example.org>"

    @property
    def subject(self) -> str:
        return f"{self.verb} {self.student} {self.customer} p{self.customer}@example.com"


def plan(students: int, rounds: int) -> list[Planned]:
    """Round r: a CREATE per student (customer r*1000 + n), then their CLEANUPs."""
    orders = []
    for r in range(1, rounds + 1):
        orders += [Planned("CREATE", n, r * 1000 + n) for n in range(1, students + 1)]
        orders += [Planned("CLEANUP", n, r * 1000 + n) for n in range(1, students + 1)]
    return orders


@dataclass
class Report:
    kills: int = 0
    orders: int = 0
    acknowledged: dict[str, int] = field(default_factory=dict)  # Message-ID -> job id
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    active_twice: list[str] = field(default_factory=list)
    cleaned_wrong: list[str] = field(default_factory=list)
    completion_wrong: list[str] = field(default_factory=list)
    redeployed: list[str] = field(default_factory=list)
    stray_passwords: list[str] = field(default_factory=list)
    integrity: str = "?"
    seconds: float = 0.0
    resumed_steps: int = 0
    interrupted: int = 0  # orders a kill caught mid-run (more than one attempt)

    def defects(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "doubled": len(self.doubled),
            "active sent twice": len(self.active_twice),
            "cleaned not once": len(self.cleaned_wrong),
            "completion overwritten": len(self.completion_wrong),
            "redeployed after active": len(self.redeployed),
            "stray passwords": len(self.stray_passwords),
            "integrity_check not ok": int(self.integrity != "ok"),
        }

    def ok(self) -> bool:
        return not any(self.defects().values())

    def lines(self) -> list[str]:
        out = [f"{self.orders} orders, {len(self.acknowledged)} acknowledged, {self.kills} "
               f"SIGKILLs, {self.seconds:.1f} s; {self.interrupted} orders interrupted mid-run, "
               f"{self.resumed_steps} of their steps skipped by re-runs"]
        out += [f"  {name}: {count}" for name, count in self.defects().items()]
        for name in ("lost", "doubled", "active_twice", "cleaned_wrong", "completion_wrong",
                     "redeployed",
                     "stray_passwords"):
            for item in getattr(self, name)[:10]:
                out.append(f"    {name}: {item}")
        out.append(f"  integrity_check: {self.integrity}")
        return out


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()[:16]


class EventLog:
    """One append-only file shared by the post-copy hook (a shell script) and the portal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        with self._lock, open(self.path, "a") as handle:
            handle.write(line + "\n")

    def events(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines() if line.strip()]


def watch_portal(sandbox: Sandbox, events: EventLog) -> None:
    """Logs `active <student> <password digest>` before the portal answers the PUT, so the
    event is in the log before the daemon can go on (and before any redeploy); then the
    participant starts working: they run the first code cell of the first notebook."""
    portal = sandbox.portal
    handle = portal._handle
    prefix = portal.base_path + "/customer/"

    def watched(request: StandinRequest) -> Any:
        body = request.json()
        if (request.method == "PUT" and request.path.startswith(prefix)
                and isinstance(body, dict) and body.get("active") is True):
            customer = portal.customer(int(request.path.removeprefix(prefix))) or {}
            db_id = customer.get("studentId")
            student = (portal.student(db_id) or {}) if db_id is not None else {}
            number = int(db_id) - BASE_ID
            events.append(f"active {number} {digest(student.get('password', ''))}")
            answer = handle(request)
            run_first_cell(sandbox.home(number) / WS / "0-ReadMeFirst.ipynb")
            return answer
        return handle(request)

    portal._handle = watched  # type: ignore[method-assign]


def run_first_cell(notebook: Path) -> None:
    """What a participant does: one code cell executed (in place: owner and inode kept)."""
    try:
        data = json.loads(notebook.read_text())
    except (OSError, ValueError):
        return  # no such home: the order is not ours to judge here
    for cell in data.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["execution_count"] = 1
            break
    notebook.write_text(json.dumps(data))


def write_hook(scripts: Path, events: EventLog, pause: float) -> None:
    scripts.mkdir(parents=True, exist_ok=True)
    hook = scripts / f"post-copy-{WS}.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f"echo \"deployed $stdid $(printf %s \"$randompw\" | sha256sum | cut -c1-16)\""
        f" >> {events.path}\n"
        f"sleep {pause}\n"  # an order spends a while here: kills land mid-order
    )
    hook.chmod(0o755)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """The real `wodmail serve`, started again after each SIGKILL on the same port."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wodmail.cli", "serve", "--config", str(self.config)],
                stdout=log, stderr=log,
            )

    def wait_up(self, limit: float = 60.0) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.recv(64)
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace=60)


def send_until_acknowledged(port: int, order: Planned, stop: threading.Event) -> int | None:
    """Sends `order` (same Message-ID each time) until a 250; returns its job id."""
    while not stop.is_set():
        try:
            code, reply = send_smtplib(HOST, port, order.subject, WS,
                                       message_id=order.message_id)
        except (OSError, EOFError, ConnectionError) as exc:  # killed mid-session, or down
            del exc
            time.sleep(0.05)
            continue
        if code == 250:
            return int(reply.split()[-1])
        time.sleep(0.05)  # 451: try again
    return None


def run_stream(
    root: Path, *, students: int, rounds: int, kills: int, seed: int,
    alive: tuple[float, float] = (0.2, 1.2), hook_pause: float = 0.2, hub_pause: float = 0.2,
    rate: float | None = None, progress: Any = None,
) -> Report:
    """Runs the whole chaos stream in `root`; returns what it counted."""
    rng = random.Random(seed)
    orders = plan(students, rounds)
    report = Report(orders=len(orders))
    started = time.monotonic()
    sandbox = make_sandbox(root / "sandbox", students=range(1, students + 1), base_id=BASE_ID)
    try:
        for r in range(1, rounds + 1):
            for n in range(1, students + 1):
                sandbox.portal.add_customer(r * 1000 + n, notebook=WS, studentId=n + BASE_ID)
        events = EventLog(root / "events.log")
        watch_portal(sandbox, events)
        sandbox.hub.set_delay(hub_pause)  # widens the window between `active` and done
        write_hook(root / "scripts", events, hook_pause)
        data = sandbox.config_data()
        port = free_port()
        data["listen"]["port"] = port
        data["scripts"]["private"] = str(root / "scripts")
        data["accounts"]["ssh_key_bits"] = 2048  # the smallest allowed: keys are not measured here
        data["dispatch"].update(retry_deadline_seconds=60)
        config = root / "wodmail.yml"
        config.write_text(yaml.safe_dump(data))
        server = Server(config, port, root / "daemon.log")
        server.start()
        stop = threading.Event()
        acknowledged: dict[str, int] = {}

        def sender() -> None:
            for order in orders:
                if rate:
                    time.sleep(1 / rate)  # a steady stream, so kills keep landing mid-order
                job = send_until_acknowledged(port, order, stop)
                if job is None:
                    return
                acknowledged[order.message_id] = job

        thread = threading.Thread(target=sender, name="chaos-sender", daemon=True)
        thread.start()
        try:
            while report.kills < kills:
                if not server.wait_up():
                    raise RuntimeError(f"the daemon did not come up; see {server.log}")
                time.sleep(rng.uniform(*alive))
                server.kill()
                report.kills += 1
                if progress:
                    progress(f"kill {report.kills}/{kills}: {len(acknowledged)}/{len(orders)} "
                             "acknowledged")
                server.start()
            if not server.wait_up():
                raise RuntimeError(f"the daemon did not come up; see {server.log}")
            thread.join(FINISH_TIMEOUT_SECONDS)
            wait_finished(sandbox, acknowledged, FINISH_TIMEOUT_SECONDS)
        finally:
            stop.set()
            server.stop()
        report.acknowledged = acknowledged
        judge(report, sandbox, orders, events)
    finally:
        sandbox.close()
    report.seconds = time.monotonic() - started
    return report


def journal_path(sandbox: Sandbox) -> Path:
    return sandbox.root / "state" / "journal.sqlite3"


def wait_finished(sandbox: Sandbox, acknowledged: dict[str, int], limit: float) -> None:
    deadline = time.monotonic() + limit
    ids = set(acknowledged.values())
    while time.monotonic() < deadline:
        jobs = {job.id: job for job in JournalReader(journal_path(sandbox)).list_jobs()}
        if all(i in jobs and jobs[i].state.finished for i in ids):
            return
        time.sleep(0.1)


def judge(report: Report, sandbox: Sandbox, orders: list[Planned], events: EventLog) -> None:
    path = journal_path(sandbox)
    jobs = {job.id: job for job in JournalReader(path).list_jobs()}
    by_message = Counter(job.message_id for job in jobs.values() if job.message_id)
    for order in orders:
        job_id = report.acknowledged.get(order.message_id)
        job = jobs.get(job_id) if job_id is not None else None
        if job_id is None:
            report.lost.append(f"{order.subject}: never acknowledged")
        elif job is None or job.state is not JobState.DONE:
            state = "missing" if job is None else f"{job.state.value}: {job.reason}"
            report.lost.append(f"job {job_id} {order.subject}: {state}")
        if by_message[order.message_id] > 1:
            report.doubled.append(f"{order.message_id}: {by_message[order.message_id]} orders")
        if job is not None:
            report.interrupted += job.attempts > 1
            report.resumed_steps += sum(
                step.get("status") == "resumed" for step in job.result.get("steps", []))
    writes = [(c.path, c.json) for c in sandbox.portal.writes()]
    for order in orders:
        path_c = f"{sandbox.portal.base_path}/customer/{order.customer}"
        flag = {"active": True} if order.verb == "CREATE" else {"cleaned": True}
        count = writes.count((path_c, flag))
        if count != 1:
            target = report.active_twice if order.verb == "CREATE" else report.cleaned_wrong
            target.append(f"customer {order.customer}: {flag} sent {count} times")
        figures = [body["completionPercentage"] for where, body in writes
                   if where == path_c and "completionPercentage" in (body or {})]
        if order.verb == "CLEANUP" and (len(set(figures)) != 1 or 0 in figures):
            report.completion_wrong.append(f"customer {order.customer}: {figures}")
    judge_events(report, events)
    judge_passwords(report, sandbox, orders, jobs)
    with sqlite3.connect(path) as conn:
        report.integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]


def judge_events(report: Report, events: EventLog) -> None:
    """A `deployed` of an order's home after that order's `active` is a redeploy."""
    announced: set[tuple[str, str]] = set()
    for event in events.events():
        kind, student, password = event[0], event[1], event[2]
        if kind == "active":
            announced.add((student, password))
        elif kind == "deployed" and (student, password) in announced:
            report.redeployed.append(f"student{student}: home deployed again after active")


def judge_passwords(
    report: Report, sandbox: Sandbox, orders: list[Planned], jobs: dict[int, Any]
) -> None:
    """Every password the portal was given is the one an order ended with."""
    ended = {job.result.get("password") for job in jobs.values() if job.result.get("password")}
    for call in sandbox.portal.writes():
        body = call.json if isinstance(call.json, dict) else {}
        if "password" in body and body["password"] not in ended:
            report.stray_passwords.append(f"{call.path}: a password no order ended with")
