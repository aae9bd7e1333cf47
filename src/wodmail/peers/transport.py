"""HTTP/1.1 for the peer clients over asyncio streams and h11, under httpx's client API.

httpx's own transport (httpcore over anyio) costs about 1.2 ms of CPU per request on a
2-core backend; this one about 0.6 ms (`bench/http_transport.py`), and a CREATE makes four
or five requests. It is the same protocol engine (h11, as httpcore uses) with what wodmail
needs of a transport and nothing more: keep-alive connections per origin, TLS with httpx's
default certificates, httpx's timeouts and exceptions. One write per request (head and
body together), where httpcore makes two.

A kept connection is dropped when the server has closed it, has sent something unasked,
or has been idle past `idle_seconds`. When a kept connection turns out to be dead on use
(the server closed it as we sent), an idempotent request is sent again once on a new
connection; a POST is not, and fails as a `httpx.RemoteProtocolError`, as with httpcore.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

READ_CHUNK = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
"""A body past this is refused (`httpx.RemoteProtocolError`): no peer answer is that big."""
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

Origin = tuple[str, str, int]


class _Stale(Exception):
    """A kept connection was found closed before any byte of the answer came."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0
    reused: bool = False

    def usable(self, now: float, idle_seconds: float) -> bool:
        """Still fit to carry a request: open, quiet, and not idle too long."""
        return not (
            self.writer.is_closing()
            or self.reader.at_eof()
            or self.reader.exception() is not None
            or len(self.reader._buffer) > 0  # noqa: SLF001 (bytes nobody asked for)
            or now - self.idle_since > idle_seconds
        )

    def close(self) -> None:
        self.writer.close()


class StreamTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncClient(transport=...)` for plain HTTP/1.1 peers (the portal, the hub)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_idle_per_origin: int = 20,
        idle_seconds: float = 4.0,  # under Node's 5 s keep-alive (the portal's API-DB)
    ) -> None:
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle_per_origin
        self._idle_seconds = idle_seconds
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        async with _within(timeouts.get("pool"), httpx.PoolTimeout, "no connection free"):
            await self._slots.acquire()
        try:
            try:
                return await self._exchange(request, body, timeouts, fresh=False)
            except _Stale as stale:
                if request.method not in IDEMPOTENT:
                    raise httpx.RemoteProtocolError(str(stale), request=request) from None
                return await self._exchange(request, body, timeouts, fresh=True)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    # -- one request on one connection -------------------------------------------------------

    async def _exchange(
        self, request: httpx.Request, body: bytes, timeouts: dict[str, float | None],
        *, fresh: bool,
    ) -> httpx.Response:
        origin = _origin(request.url)
        connection = None if fresh else self._kept(origin)
        if connection is None:
            connection = await self._connect(request, origin, timeouts.get("connect"))
        try:
            await self._send(connection, request, body, timeouts.get("write"))
            response = await self._receive(connection, request, timeouts.get("read"))
        except BaseException:
            connection.close()  # cancelled or failed mid-exchange: never handed out again
            raise
        self._keep(origin, connection)
        return response

    def _kept(self, origin: Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            if connection.usable(now, self._idle_seconds):
                connection.reused = True
                return connection
            connection.close()
        return None

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        protocol = connection.protocol
        if protocol.our_state is not h11.DONE or protocol.their_state is not h11.DONE:
            connection.close()  # "Connection: close", or an answer we did not read through
            return
        protocol.start_next_cycle()
        connection.idle_since = time.monotonic()
        connections = self._idle.setdefault(origin, [])
        connections.append(connection)
        if len(connections) > self._max_idle:
            connections.pop(0).close()

    async def _connect(
        self, request: httpx.Request, origin: Origin, limit: float | None
    ) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            tls = self._ssl_context or _default_ssl_context()
        async with _within(limit, httpx.ConnectTimeout, f"connecting to {host}:{port}",
                           request):
            try:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None,
                    limit=READ_CHUNK,
                )
            except (OSError, ssl.SSLError) as exc:
                raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return _Connection(reader, writer)

    async def _send(
        self, connection: _Connection, request: httpx.Request, body: bytes,
        limit: float | None,
    ) -> None:
        protocol = connection.protocol
        data = protocol.send(h11.Request(
            method=request.method, target=request.url.raw_path, headers=request.headers.raw,
        )) or b""
        if body:
            data += protocol.send(h11.Data(data=body)) or b""
        data += protocol.send(h11.EndOfMessage()) or b""
        async with _within(limit, httpx.WriteTimeout, "sending the request", request):
            try:
                connection.writer.write(data)
                await connection.writer.drain()
            except OSError as exc:
                if connection.reused:
                    raise _Stale(f"kept connection closed by the server: {exc}") from exc
                raise httpx.WriteError(str(exc), request=request) from exc

    async def _receive(
        self, connection: _Connection, request: httpx.Request, limit: float | None
    ) -> httpx.Response:
        protocol = connection.protocol
        head: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        heard = False  # any byte of the answer
        while True:
            try:
                event = protocol.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(_broken(head, heard, exc), request=request) from exc
            if event is h11.NEED_DATA:
                data = await self._read(connection, request, limit, heard=heard)
                heard = heard or bool(data)
                protocol.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise httpx.RemoteProtocolError(
                        f"the answer's body is over {MAX_BODY} bytes", request=request
                    )
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if head is None:
            raise httpx.RemoteProtocolError(_broken(None, heard, None), request=request)
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            content=b"".join(chunks),
            extensions={"http_version": b"HTTP/" + head.http_version,
                        "reason_phrase": head.reason},
        )

    @staticmethod
    async def _read(
        connection: _Connection, request: httpx.Request, limit: float | None, *, heard: bool
    ) -> bytes:
        async with _within(limit, httpx.ReadTimeout, "waiting for the answer", request):
            try:
                data = await connection.reader.read(READ_CHUNK)
            except OSError as exc:
                if connection.reused and not heard:
                    raise _Stale(f"kept connection reset by the server: {exc}") from exc
                raise httpx.ReadError(str(exc), request=request) from exc
        if not data and connection.reused and not heard:
            raise _Stale("kept connection closed by the server before it answered")
        return data


def _broken(head: h11.Response | None, heard: bool, error: Exception | None) -> str:
    if not heard:
        return "Server disconnected without sending a response."
    said = f" ({error})" if error else ""
    if head is None:
        return f"the server broke off its answer's head{said}"
    return f"the server broke off its answer after the head{said}"


def usable_for(base_url: str) -> bool:
    """False when the environment sends `base_url` through a proxy (HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY without a NO_PROXY match): httpx's own transport then goes on handling it."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass_environment(url.host, proxies))


def _origin(url: httpx.URL) -> Origin:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host, port


_ssl_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's CAs, SSL_CERT_FILE honoured), made once."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


class _within:  # noqa: N801 (used as a function: `async with _within(...)`)
    """`asyncio.timeout(seconds)`, its TimeoutError turned into httpx's `error`."""

    __slots__ = ("_seconds", "_error", "_doing", "_request", "_timeout")

    def __init__(
        self, seconds: float | None, error: type[httpx.TimeoutException], doing: str,
        request: httpx.Request | None = None,
    ) -> None:
        self._seconds, self._error, self._doing, self._request = seconds, error, doing, request

    async def __aenter__(self) -> None:
        self._timeout = asyncio.timeout(self._seconds)
        await self._timeout.__aenter__()

    async def __aexit__(self, kind: Any, value: Any, traceback: Any) -> None:
        try:
            await self._timeout.__aexit__(kind, value, traceback)
        except TimeoutError as exc:
            raise self._error(f"timed out {self._doing}", request=self._request) from exc
