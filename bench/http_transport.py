"""What one request to the portal or the hub costs wodmail in CPU, by transport.

The same `httpx.AsyncClient` (base URL, JSON body, `response.json()`, as the peer clients
use it) sends PUT requests to a stand-in portal, with httpx's own transport (httpcore over
anyio, the baseline) and with wodmail's (`wodmail.peers.transport`), at 1, 8 and 20
requests in flight (a CREATE burst keeps about `dispatch.concurrency` = 8). The figure is
this process's CPU time (user + system) per request; the server runs in a child process, so
its CPU is not counted, but the kernel's loopback work on our side of each send is.

Run: .venv/bin/python bench/http_transport.py [--requests 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import httpx
from _cli import positive  # bench/ is on sys.path when a script runs

from wodmail.peers.transport import StreamTransport

SERVER = """
import json, sys, urllib.request
from wodmail.dev.standins.portal import StandinPortal
portal = StandinPortal(token_ttl=3600).start()
portal.add_student(1)
login = {"username": portal.MODERATOR_USER, "password": portal.MODERATOR_PASSWORD}
request = urllib.request.Request(portal.url + "/login", data=json.dumps(login).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
print(portal.url, json.load(urllib.request.urlopen(request))["accessToken"], flush=True)
sys.stdin.read()
"""


def start_server() -> tuple[subprocess.Popen[str], str, str]:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url, token = server.stdout.readline().split()
    return server, url, token


async def cpu_per_request(
    url: str, token: str, transport: httpx.AsyncBaseTransport | None, in_flight: int,
    requests: int,
) -> float:
    """Seconds of this process's CPU per request."""
    headers = {"Accept": "application/json", "x-access-token": token}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30,
                                 transport=transport) as client:
        for _ in range(2 * in_flight):  # connections opened, code paths warm
            (await client.put("/student/1", json={"password": "warm-up"})).raise_for_status()

        async def worker(count: int) -> None:
            for _ in range(count):
                response = await client.put("/student/1", json={"password": "s3cret-Pass"})
                response.raise_for_status()
                response.json()

        per_worker = requests // in_flight
        started = time.process_time()
        await asyncio.gather(*(worker(per_worker) for _ in range(in_flight)))
        return (time.process_time() - started) / (per_worker * in_flight)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=positive, default=3000)
    parser.add_argument("--repeat", type=positive, default=3)
    args = parser.parse_args(argv)
    print(f"machine: nproc {len(os.sched_getaffinity(0))}, CPython "
          f"{sys.version.split()[0]}, httpx {httpx.__version__}, load avg "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    server, url, token = start_server()
    try:
        print(f"{'in flight':>9s} {'httpx transport':>16s} {'wodmail transport':>18s} "
              f"{'ratio':>6s}   (CPU per request, median of {args.repeat})")
        for in_flight in (1, 8, 20):
            baseline, ours = [], []
            for _ in range(args.repeat):  # interleaved, so load changes hit both alike
                baseline.append(asyncio.run(
                    cpu_per_request(url, token, None, in_flight, args.requests)))
                ours.append(asyncio.run(
                    cpu_per_request(url, token, StreamTransport(), in_flight, args.requests)))
            old, new = statistics.median(baseline), statistics.median(ours)
            print(f"{in_flight:9d} {old * 1e6:13.0f} us {new * 1e6:15.0f} us "
                  f"{new / old:5.2f}x")
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    print(f"load avg at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
