"""Soak: the real `wodmail serve` under a steady stream of orders for a long time.

A sandbox (make_sandbox: student homes, an accounts root for the real `chpasswd -R` when
root, stand-in portal and hub on loopback) and the daemon as a child process. Orders come at
a steady rate from an ordinary CRLF client that waits for each 250: per student in turn a
CREATE, then (next round) a CLEANUP, for ever. Every `--interval` seconds one line shows
what would reveal a leak or a slow drift: the daemon's RSS and open files, the 250 latency
(p50/p99) of the interval, and the orders done, failed and still open.

Run: .venv/bin/python bench/soak.py [--seconds 600] [--rate 4] [--interval 30]
Exit status: 1 if an order failed, was not acknowledged, or was still open once no order
had finished for 60 s after the end; else 0 (RSS and open files are printed, not judged).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from _cli import positive  # bench/ is on sys.path when a script runs

from wodmail.dev.sandbox import SAMPLE_WORKSHOP, make_sandbox
from wodmail.dev.standins.flood import serve
from wodmail.dev.standins.mail_clients import send_smtplib
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader

STUDENTS = range(1, 21)
SETTLE_SECONDS = 60.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def order(index: int) -> str:
    student = STUDENTS[index % len(STUDENTS)]
    verb = "CREATE" if (index // len(STUDENTS)) % 2 == 0 else "CLEANUP"
    return f"{verb} {student} {student}"


class Stream:
    """Sends orders at `rate` per second in a thread; keeps each 250's latency."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.period = port, 1.0 / rate
        self.latencies: list[float] = []
        self.sent = self.unacknowledged = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def take_latencies(self) -> list[float]:
        with self._lock:
            taken, self.latencies = self.latencies, []
        return taken

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                code, _ = send_smtplib("127.0.0.1", self.port, order(self.sent), SAMPLE_WORKSHOP,
                                       sender="wodmail-soak@example.org")
            except OSError:
                code = 0
            with self._lock:
                self.latencies.append(time.monotonic() - started)
                self.sent += 1
                self.unacknowledged += code != 250
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def counts(reader: JournalReader) -> dict[str, int]:
    jobs = reader.list_jobs()
    states = [job.state for job in jobs]
    return {
        "done": states.count(JobState.DONE),
        "failed": sum(state in (JobState.FAILED, JobState.REJECTED) for state in states),
        "open": sum(not state.finished for state in states),
    }


def report(elapsed: float, pid: int, stream: Stream, reader: JournalReader) -> dict[str, int]:
    latencies = stream.take_latencies()
    state = counts(reader)
    print(
        f"{elapsed:7.0f} s  rss {rss_mib(pid):6.1f} MiB  files {open_files(pid):4d}  "
        f"250 p50 {percentile(latencies, 0.5) * 1000:6.1f} ms p99 "
        f"{percentile(latencies, 0.99) * 1000:7.1f} ms  sent {stream.sent:6d}  "
        f"done {state['done']:6d}  failed {state['failed']:4d}  open {state['open']:3d}",
        flush=True,
    )
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive, default=600, help="how long (default 600)")
    parser.add_argument("--rate", type=float, default=4.0, help="orders per second (default 4)")
    parser.add_argument("--interval", type=positive, default=30, help="seconds between lines")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wodmail-soak-") as folder:
        root = Path(folder)
        sandbox = make_sandbox(root / "sandbox", students=STUDENTS)
        try:
            config = sandbox.config_data()
            config["allowed_senders"] = ["wodmail-soak@example.org"]
            with serve(root / "serve", config) as server:
                return soak(server.process.pid, server.port, root, args)
        finally:
            sandbox.close()


def soak(pid: int, port: int, root: Path, args: argparse.Namespace) -> int:
    reader = JournalReader(root / "sandbox" / "state" / "journal.sqlite3")
    print(f"soak: {args.rate:g} orders/s for {args.seconds} s, a line every {args.interval} s "
          f"(load avg {os.getloadavg()[0]:.2f})", flush=True)
    stream = Stream(port, args.rate)
    started = time.monotonic()
    stream.start()
    while (elapsed := time.monotonic() - started) < args.seconds:
        time.sleep(min(args.interval, args.seconds - elapsed))
        report(time.monotonic() - started, pid, stream, reader)
    stream.stop()
    # A backlog (the machine slower than the rate) is worked off as long as it shrinks.
    progress_at, left = time.monotonic(), counts(reader)["open"]
    while left and time.monotonic() - progress_at < SETTLE_SECONDS:
        time.sleep(1)
        now_left = counts(reader)["open"]
        if now_left < left:
            progress_at, left = time.monotonic(), now_left
    state = report(time.monotonic() - started, pid, stream, reader)
    ok = not state["failed"] and not state["open"] and not stream.unacknowledged
    print(f"soak: {stream.sent} orders, {stream.unacknowledged} not acknowledged, "
          f"{state['failed']} failed, {state['open']} still open: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
