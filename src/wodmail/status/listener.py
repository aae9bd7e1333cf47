"""The status listener (`status.listen`): `/healthz`, `/jobs`, `/metrics` and a page at `/`.

A few lines of HTTP/1.1 on asyncio rather than a web framework: four GET endpoints on
loopback, one request per connection, served from the daemon's own event loop (so every
answer reads live state, no locks). aiohttp or starlette+uvicorn would add a dependency
tree larger than the rest of wodmail for that. Journal reads run in a thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from wodmail import metrics
from wodmail.journal.jobs import Job, JobState
from wodmail.journal.store import JournalReader
from wodmail.status.health import Health, HealthSource
from wodmail.status.page import render_page

log = structlog.get_logger(__name__)

VERBS = ("CREATE", "CLEANUP", "RESET", "PURGE")
_HEAD_LIMIT = 16384
_READ_SECONDS = 10.0
_PAGE_HOURS = 6.0
_PAGE_ROWS = 2000


class BadRequest(ValueError):
    """A query the endpoint cannot answer: 400 with this one-line message."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def of_json(cls, status: int, payload: Any) -> Response:
        return cls(status, (json.dumps(payload, indent=2) + "\n").encode())


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


def job_filters(query: dict[str, list[str]]) -> dict[str, Any]:
    """`wodmail jobs` options from a query string: state (repeatable or comma-separated),
    student, workshop, verb, limit."""
    known = {"state", "student", "workshop", "verb", "limit"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} (use {', '.join(sorted(known))})")
    filters: dict[str, Any] = {}
    states = [s for value in query.get("state", []) for s in value.split(",") if s]
    if states:
        try:
            filters["states"] = [JobState(state) for state in states]
        except ValueError:
            choices = ", ".join(state.value for state in JobState)
            raise BadRequest(f"state must be one of {choices}") from None
    for name in ("student", "limit"):
        if name in query:
            value = query[name][-1]
            if not value.isdigit():
                raise BadRequest(f"{name} must be a whole number, got {value!r}")
            filters[name] = int(value)
    if "workshop" in query:
        filters["workshop"] = query["workshop"][-1]
    if "verb" in query:
        verb = query["verb"][-1].upper()
        if verb not in VERBS:
            raise BadRequest(f"verb must be one of {', '.join(VERBS)}")
        filters["verb"] = verb
    return filters


class StatusServer:
    """Serves the status endpoints for one daemon (`health` checks, `journal` reads)."""

    def __init__(self, source: HealthSource, journal: JournalReader, host: str, port: int) -> None:
        self._health = Health(source)
        self._journal = journal
        self._host = host
        self._port = port
        self._server: asyncio.base_events.Server | None = None
        self._routes: dict[str, Callable[[dict[str, list[str]]], Awaitable[Response]]] = {
            "/": self._page,
            "/healthz": self._healthz,
            "/jobs": self._jobs,
            "/metrics": self._metrics,
        }

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("status listener", url=f"http://{self._host}:{self.port}/")

    async def stop(self) -> None:
        self._health.close()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await self._answer(reader)
            head = (
                f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + response.body)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass  # a client gone or too slow: nothing to answer
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> Response:
        async with asyncio.timeout(_READ_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _HEAD_LIMIT:
            return Response.of_json(400, {"error": "request head too large"})
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3:
            return Response.of_json(400, {"error": "malformed request line"})
        method, target, _version = parts
        url = urlsplit(target)
        route = self._routes.get(url.path)
        if route is None:
            return Response.of_json(404, {"error": f"no such page {url.path}",
                                          "pages": sorted(self._routes)})
        if method != "GET":
            return Response.of_json(405, {"error": "only GET is served"})
        try:
            return await route(parse_qs(url.query, keep_blank_values=True))
        except BadRequest as exc:
            return Response.of_json(400, {"error": str(exc)})

    async def _healthz(self, query: dict[str, list[str]]) -> Response:
        healthy, body = await self._health.report()
        return Response.of_json(200 if healthy else 503, body)

    async def _jobs(self, query: dict[str, list[str]]) -> Response:
        filters = job_filters(query)
        jobs = await asyncio.to_thread(self._journal.list_jobs, **filters)
        return Response.of_json(200, [job.to_public() for job in jobs])

    async def _metrics(self, query: dict[str, list[str]]) -> Response:
        return Response(200, metrics.exposition(), metrics.CONTENT_TYPE)

    async def _page(self, query: dict[str, list[str]]) -> Response:
        hours = _PAGE_HOURS
        if "hours" in query:
            try:
                hours = float(query["hours"][-1])
            except ValueError:
                raise BadRequest("hours must be a number") from None
        jobs = await asyncio.to_thread(self._recent, hours)
        page = render_page(jobs, hours=hours, now=time.time())
        return Response(200, page.encode(), "text/html; charset=utf-8")

    def _recent(self, hours: float) -> list[Job]:
        since = time.time() - hours * 3600
        jobs = self._journal.list_jobs(limit=_PAGE_ROWS)
        return [job for job in jobs if job.received_at >= since]
