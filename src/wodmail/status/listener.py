"""The status listener (`status.listen`): `/healthz`, `/jobs`, `/metrics` and a page at `/`.

A few lines of HTTP/1.1 on asyncio rather than a web framework: four GET endpoints, one
request per connection, served from the daemon's own event loop (so every answer reads live
state, no locks). aiohttp or starlette+uvicorn would add a dependency tree larger than the
rest of wodmail for that. Journal reads run in a thread.

Every local user (students included) can connect, so the listener holds its own: at most
`status.max_connections` connections (one more gets a 503 and is closed at once), a request
head within `status.timeout_seconds`, a Host it answers for (`access`), the bearer token of
`status.token_file` when set, and answers without hook output or whole e-mail addresses
(`public`). Refusals are counted (`wodmail_status_refusals_total`) and summed up in the log
once per burst.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from wodmail import metrics
from wodmail.config import Status, url_host
from wodmail.journal.jobs import Job
from wodmail.journal.store import JournalReader
from wodmail.status.access import BearerCheck, HostCheck, Refusal
from wodmail.status.connections import Connections
from wodmail.status.health import Health, HealthSource
from wodmail.status.joblist import JobsQuery, jobs_query, next_link
from wodmail.status.page import render_page
from wodmail.status.public import public_job
from wodmail.status.request import BadRequest, Request, parse_head

log = structlog.get_logger(__name__)

_HEAD_LIMIT = 16384
# An answer (at most a page of 1000 orders) the client has not taken within this long is
# dropped: a client that does not read must not hold a connection slot for good.
_SEND_SECONDS = 60.0
_PAGE_HOURS = 6.0
_PAGE_ROWS = 2000
_MAX_PAGE_HOURS = 24.0 * 366

Headers = tuple[tuple[str, str], ...]


class RefusalLog(Protocol):
    """Where refusals are summed up (one log line per burst: `intake.bursts.BurstLog`)."""

    def add(self, key: str, **fields: Any) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Headers = ()

    @classmethod
    def of_json(cls, status: int, payload: Any, headers: Headers = ()) -> Response:
        return cls(status, (json.dumps(payload, indent=2) + "\n").encode(), headers=headers)

    def encode(self) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {_REASONS.get(self.status, '')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            "X-Content-Type-Options: nosniff",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 421: "Misdirected Request",
            500: "Internal Server Error", 503: "Service Unavailable"}
# The page has no script and loads nothing: a browser may run or fetch nothing either.
_PAGE_HEADERS = (("Content-Security-Policy",
                  "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),)


class StatusServer:
    """Serves the status endpoints for one daemon (`health` checks, `journal` reads)."""

    def __init__(
        self,
        source: HealthSource,
        journal: JournalReader,
        settings: Status,
        *,
        token: str | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        address = settings.address()
        assert address is not None, "no status.listen"
        self._host, self._port = address
        self._settings = settings
        self._health = Health(source)
        self._journal = journal
        self._bearer = BearerCheck(token) if token is not None else None
        self._hosts: HostCheck | None = None
        self._refusals = refusals
        self._connections = Connections(
            self._serve, limit=settings.max_connections, busy=self._busy(),
            stream_limit=_HEAD_LIMIT, on_refused=lambda peer: self._refused(peer, "capacity"),
        )
        self._routes: dict[str, Callable[[dict[str, list[str]]], Awaitable[Response]]] = {
            "/": self._page,
            "/healthz": self._healthz,
            "/jobs": self._jobs,
            "/metrics": self._metrics,
        }

    @property
    def port(self) -> int:
        return self._connections.port

    @property
    def open(self) -> int:
        """Connections being served."""
        return self._connections.open

    async def start(self) -> None:
        await self._connections.start(self._host, self._port)
        self._hosts = HostCheck(self._host, self.port, self._settings.hostnames)
        log.info("status listener", url=f"http://{url_host(self._host)}:{self.port}/",
                 token=self._bearer is not None,
                 max_connections=self._settings.max_connections)

    async def stop(self) -> None:
        self._health.close()
        await self._connections.stop()
        if self._refusals is not None:
            self._refusals.flush()  # the summary of a burst still in its window

    # -- connections -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else "?"
        try:
            response = await self._answer(reader, host)
            async with asyncio.timeout(_SEND_SECONDS):
                writer.write(response.encode())
                await writer.drain()
                writer.close()
                await writer.wait_closed()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # a client gone or too slow: nothing more to say

    def _busy(self) -> bytes:
        limit = self._settings.max_connections
        return _error(503, f"too many connections (status.max_connections {limit}), "
                      "try again later").encode()

    async def _answer(self, reader: asyncio.StreamReader, peer: str) -> Response:
        try:
            async with asyncio.timeout(self._settings.timeout_seconds):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self._refused(peer, "timeout")
            return _error(408, "the request did not arrive in time (status.timeout_seconds)")
        except asyncio.LimitOverrunError:
            self._refused(peer, "request")
            return _error(400, "request head too large")
        try:
            request = parse_head(head)
        except BadRequest as exc:
            self._refused(peer, "request")
            return _error(400, str(exc))
        refusal = self._access(request)
        if refusal is not None:
            self._refused(peer, refusal.kind)
            return _error(refusal.status, refusal.message, refusal.headers)
        return await self._route(request)

    def _access(self, request: Request) -> Refusal | None:
        assert self._hosts is not None
        refusal = self._hosts.refusal(request)
        if refusal is None and self._bearer is not None:
            refusal = self._bearer.refusal(request)
        return refusal

    def _refused(self, peer: str, kind: str) -> None:
        metrics.status_refused(kind)
        if self._refusals is not None:
            self._refusals.add(f"{peer}: {kind}")

    # -- endpoints ---------------------------------------------------------------------------

    async def _route(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            return Response.of_json(404, {"error": f"no such page {request.path}",
                                          "pages": sorted(self._routes)})
        if request.method != "GET":
            return _error(405, "only GET is served")
        try:
            return await route(request.query)
        except BadRequest as exc:
            return _error(400, str(exc))
        except Exception:
            log.exception("status listener: the answer failed", path=request.path)
            return _error(500, "the answer failed (the daemon's log says why)")

    async def _healthz(self, query: dict[str, list[str]]) -> Response:
        healthy, body = await self._health.report()
        return Response.of_json(200 if healthy else 503, body)

    async def _jobs(self, query: dict[str, list[str]]) -> Response:
        wanted = jobs_query(query)
        body, last_id = await asyncio.to_thread(self._jobs_page, wanted)
        headers: Headers = () if last_id is None else (("Link", next_link(query, last_id)),)
        return Response(200, body, headers=headers)

    def _jobs_page(self, wanted: JobsQuery) -> tuple[bytes, int | None]:
        """The page's JSON, and the id of its last order when older ones match."""
        jobs = self._journal.list_jobs(**wanted.filters, limit=wanted.limit + 1,
                                       before=wanted.before)
        page = jobs[:wanted.limit]
        body = (json.dumps([public_job(job) for job in page], indent=2) + "\n").encode()
        return body, page[-1].id if len(jobs) > wanted.limit else None

    async def _metrics(self, query: dict[str, list[str]]) -> Response:
        return Response(200, metrics.exposition(), metrics.CONTENT_TYPE)

    async def _page(self, query: dict[str, list[str]]) -> Response:
        hours = _PAGE_HOURS
        if "hours" in query:
            try:
                hours = float(query["hours"][-1])
            except ValueError:
                hours = math.nan
            if not 0 < hours <= _MAX_PAGE_HOURS:
                raise BadRequest(f"hours must be a number above 0, at most {_MAX_PAGE_HOURS:g}")
        page = await asyncio.to_thread(self._render, hours)
        return Response(200, page.encode(), "text/html; charset=utf-8", _PAGE_HEADERS)

    def _render(self, hours: float) -> str:
        now = time.time()
        return render_page(self._recent(hours, now), hours=hours, now=now,
                           peers=metrics.LAST_PEER_RESULTS)

    def _recent(self, hours: float, now: float) -> list[Job]:
        since = now - hours * 3600
        jobs = self._journal.list_jobs(limit=_PAGE_ROWS)
        return [job for job in jobs if job.received_at >= since]


def _error(status: int, message: str, headers: Headers = ()) -> Response:
    return Response.of_json(status, {"error": message}, headers)
