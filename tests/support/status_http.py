"""Talking to a daemon's status listener over real loopback HTTP, including what no polite
client sends (no Host, two Hosts, nothing at all), and reading its refusal counters."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from wodmail import metrics
from wodmail.service import Daemon

# Generous: a loaded 2-core machine is slow; nothing here is timed.
LIMIT = 60.0


def status_port(daemon: Daemon) -> int:
    assert daemon.status is not None, "the status listener is not running"
    return daemon.status.port


async def raw_request(port: int, data: bytes, *, limit: float = LIMIT) -> bytes:
    """Sends `data` as is and returns everything the listener answers before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), limit)
    finally:
        writer.close()


async def get(port: int, path: str, *headers: str, version: str = "HTTP/1.1") -> bytes:
    """A GET of `path` with exactly `headers` (`Name: value` each; no Host unless given)."""
    head = "".join(f"{header}\r\n" for header in headers)
    return await raw_request(port, f"GET {path} {version}\r\n{head}\r\n".encode())


def status_code(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def refusals(reason: str) -> float:
    """wodmail_status_refusals_total{reason} in this process (the daemons of in-process tests
    share the registry: compare before and after)."""
    text = metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "wodmail_status_refusals_total"
                    and sample.labels.get("reason") == reason):
                return sample.value
    return 0.0
