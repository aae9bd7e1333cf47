"""Relay benchmark: participants' mail through wodmail to a smarthost.

The real `wodmail serve` runs in a child process with `relay.host` pointing at a smarthost
stand-in (aiosmtpd, in this process). Clients send credentials mails as the portal does (one
burst, bare LF) but read every reply, so a client is done when its mail is committed to the
outbox (the 250 comes only after the fsync). Prints:

1. intake: relayed mails/s until every client got its 250;
2. delivery: mails/s until the smarthost holds every mail, and the latency from a mail's 250
   to its arrival at the smarthost (p50, p99);
3. that every mail arrived exactly once and the outbox holds no message text afterwards.

Run: .venv/bin/python bench/relay.py [--clients 20] [--mails 500]
Exit status: 1 if a mail was lost or doubled, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _cli import positive  # bench/ is on sys.path when a script runs

from wodmail.dev.processes import stop_subprocess
from wodmail.dev.standins.smarthost import Smarthost, free_port
from wodmail.relay.outbox import list_outbox

HOST = "127.0.0.1"
SECRET = "Bench-Pw-3kq9TzR"


class TimedSmarthost(Smarthost):
    """Also notes when each recipient's mail arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        for recipient in envelope.rcpt_tos:
            self.arrived[recipient] = time.monotonic()
        return reply


def mail(n: int) -> bytes:
    return (
        "HELO api.example.org\nMAIL FROM: sender@example.org\n"
        f"RCPT TO: p{n}@example.com\nDATA\nSubject: Workshops-on-Demand credentials\n\n"
        f"Participant {n}, the clock has started!\nUser Name: student{n % 20 + 1}\n"
        f"Password: {SECRET}\n.\nQUIT\n"
    ).encode()


async def send(port: int, n: int, acknowledged: dict[int, float]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(mail(n))
    await writer.drain()
    replies = await reader.read()  # until the server closes, after QUIT
    writer.close()
    if b"queued for relay" in replies:
        acknowledged[n] = time.monotonic()


async def clients(port: int, count: int, mails: int, acknowledged: dict[int, float]) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(mails):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            await send(port, queue.get_nowait(), acknowledged)

    await asyncio.gather(*(worker() for _ in range(count)))


async def wait_for_port(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if process.returncode is not None:
            raise RuntimeError(f"wodmail serve exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError("wodmail serve did not listen within 30 s")


async def run(args: argparse.Namespace, folder: Path) -> int:
    smarthost = TimedSmarthost().start()
    port = free_port()
    config = folder / "wodmail.yml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": HOST, "port": port},
        "state_dir": str(folder / "state"),
        "relay": {"host": HOST, "port": smarthost.port, "order_recipients": ["@backend"],
                  "allowed_senders": ["sender@example.org"],
                  "max_per_minute": args.mails},  # the limit is not what is measured here
    }))
    wodmail = Path(sys.executable).parent / "wodmail"
    process = await asyncio.create_subprocess_exec(
        str(wodmail), "serve", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_port(port, process)
        acknowledged: dict[int, float] = {}
        start = time.monotonic()
        await clients(port, args.clients, args.mails, acknowledged)
        intake_s = time.monotonic() - start
        while len(smarthost.arrived) < len(acknowledged):
            await asyncio.sleep(0.01)
            if time.monotonic() - start > 600:
                break
        delivered_s = max(smarthost.arrived.values(), default=start) - start
    finally:
        await stop_subprocess(process, grace=60)
        smarthost.stop()
    latencies = sorted(
        (smarthost.arrived[f"p{n}@example.com"] - at) * 1000
        for n, at in acknowledged.items() if f"p{n}@example.com" in smarthost.arrived
    )
    received = [r for m in smarthost.mails() for r in m.rcpt_tos]
    outbox = list_outbox(folder / "state" / "outbox.sqlite3")
    text_left = SECRET.encode() in (folder / "state" / "outbox.sqlite3").read_bytes()
    lost = args.mails - len(set(received))
    doubled = len(received) - len(set(received))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{args.mails} mails from {args.clients} clients")
    print(f"intake:   {args.mails / intake_s:7.0f} relayed mails/s committed (every 250 in "
          f"{intake_s:.2f} s)")
    print(f"delivery: {len(received) / delivered_s:7.0f} mails/s to the smarthost; 250 -> "
          f"arrival p50 {statistics.median(latencies):.0f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.0f} ms")
    print(f"lost {lost}, doubled {doubled}, outbox: {sum(m['state'] == 'sent' for m in outbox)}"
          f" sent, message text left in the file: {'yes' if text_left else 'no'}")
    return 1 if lost or doubled or text_left else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=positive, default=20)
    parser.add_argument("--mails", type=positive, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wodmail-relay-bench-") as folder:
        return asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
