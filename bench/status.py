"""Status listener benchmark: what `/jobs` costs on a big journal, and what it costs orders.

A journal of N finished orders (each with 10 steps, a hook that printed 2 KB and a
participant's address) is made with the journal's own code; the real `wodmail serve` runs on
it in a child process with its status listener on loopback. Prints:

1. one page of `/jobs` (the default 100, and `?limit=1000`): bytes and p50 seconds;
2. every order through the `Link` headers (`limit=1000`): pages, bytes, seconds;
3. `wodmail jobs --json` (what `/jobs` answered before it had pages): bytes, seconds;
4. an order's 250 (p50, p99) while a client fetches `/jobs?limit=1000` without pause.

Run: .venv/bin/python bench/status.py [--jobs 5000] [--orders 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
from _cli import positive  # bench/ is on sys.path when a script runs

from wodmail.dev.standins import flood
from wodmail.journal.jobs import JobState
from wodmail.journal.store import Arrival, Journal
from wodmail.orders import Mode, Order, Verb

WORKSHOP = "WKSHP-API101"


async def fill(path: Path, count: int) -> None:
    journal = Journal(path, dedup_window=0)
    arrival = Arrival(peer="127.0.0.1", envelope_from="wod@portal.example.org")
    result = {"steps": [{"name": f"step {n}", "status": "ok", "ms": 1.5} for n in range(10)],
              "hooks": [{"name": "script create.sh", "ok": True, "user": "wodadmin",
                         "output": "+ echo something\n" * 120}],
              "summary": f"CREATE {WORKSHOP} done"}
    try:
        for start in range(0, count, 500):
            orders = [Order(verb=Verb.CREATE, student=n % 20 + 1, customer=n,
                            email=f"participant{n}@example.com", workshop=WORKSHOP,
                            content=WORKSHOP, mode=Mode.WKSHP)
                      for n in range(start, min(count, start + 500))]
            accepted = await asyncio.gather(*(journal.accept(o, arrival) for o in orders))
            await asyncio.gather(*(journal.finish(a.job_id, JobState.DONE, result=result)
                                   for a in accepted))
    finally:
        journal.close()


def timed_get(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(url)
    response.raise_for_status()
    return response, time.monotonic() - started


def one_page(client: httpx.Client, url: str, tries: int = 10) -> str:
    runs = [timed_get(client, url) for _ in range(tries)]
    size = len(runs[0][0].content)
    return f"{size / 1e6:.2f} MB, p50 {statistics.median(s for _, s in runs):.3f} s"


def every_page(client: httpx.Client) -> str:
    url, pages, size, started = "/jobs?limit=1000", 0, 0, time.monotonic()
    while True:
        response, _ = timed_get(client, url)
        pages, size = pages + 1, size + len(response.content)
        if "next" not in response.links:
            break
        url = urljoin(url, response.links["next"]["url"])
    return f"{pages} pages, {size / 1e6:.2f} MB, {time.monotonic() - started:.2f} s"


def whole_cli(config: Path) -> str:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "wodmail.cli", "jobs", "--json", "--config",
                           str(config)], capture_output=True, check=True)
    return f"{len(done.stdout) / 1e6:.2f} MB, {time.monotonic() - started:.2f} s"


def orders_under_reads(client: httpx.Client, smtp_port: int, orders: int) -> str:
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            client.get("/jobs?limit=1000")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        seconds = [flood.order_from_allowed_client(smtp_port, n % 20 + 1).seconds
                   for n in range(orders)]
    finally:
        stop.set()
        thread.join()
    seconds.sort()
    p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))]
    return f"p50 {statistics.median(seconds) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


def run(args: argparse.Namespace, folder: Path) -> None:
    (folder / "notebooks" / WORKSHOP).mkdir(parents=True)
    config = {"listen": {"host": "127.0.0.1", "port": 0}, "state_dir": str(folder / "state"),
              "notebooks": {"public": str(folder / "notebooks")},
              "status": {"listen": "127.0.0.1:0"}}
    asyncio.run(fill(folder / "state" / "journal.sqlite3", args.jobs))
    with flood.serve(folder / "serve", config) as server:
        base = f"http://127.0.0.1:{server.status_port()}"
        with httpx.Client(base_url=base, timeout=120) as client:
            print(f"/jobs (100):           {one_page(client, '/jobs')}")
            print(f"/jobs?limit=1000:      {one_page(client, '/jobs?limit=1000')}")
            print(f"every page of 1000:    {every_page(client)}")
            print(f"wodmail jobs --json:   {whole_cli(folder / 'serve' / 'wodmail.yml')}")
            print(f"order 250 during reads: {orders_under_reads(client, server.port, args.orders)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=positive, default=5000, help="orders in the journal")
    parser.add_argument("--orders", type=positive, default=30,
                        help="orders sent while /jobs is read")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{args.jobs} orders in the journal")
    with tempfile.TemporaryDirectory(prefix="wodmail-bench-status-") as tmp:
        run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
