"""The status listener's sockets: it accepts connections itself, one at a time, so that a
connection over the cap is closed before the next one is accepted.

With `asyncio.start_server`, a burst of connections is accepted a backlog at a time and each
socket stays open for a few turns of the event loop before a handler could close it: a
student opening 1000 connections from a terminal brought a daemon allowed 256 open files to
236. Here the daemon holds at most `limit` connections plus the one being refused; the rest
wait in the kernel's queue, costing no descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
_BACKLOG = 128
# accept() failing (no descriptor left for the whole daemon: EMFILE, ENFILE): wait this long
# before the next try instead of spinning, as asyncio's own servers do.
_ACCEPT_PAUSE_SECONDS = 1.0


class Connections:
    """Serves each accepted connection with `handler`, at most `limit` at once; one more is
    sent `busy` (a few bytes a fresh socket takes at once) and closed, and `on_refused`
    is told its peer's address."""

    def __init__(self, handler: Handler, *, limit: int, busy: bytes, stream_limit: int,
                 on_refused: Callable[[str], None]) -> None:
        self._handler = handler
        self._limit = limit
        self._busy = busy
        self._stream_limit = stream_limit
        self._on_refused = on_refused
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.open = 0  # connections being served

    @property
    def port(self) -> int:
        return int(self._listeners[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._listeners = await asyncio.to_thread(listening_sockets, host, port)
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            self._keep(loop.create_task(self._accept(listener), name="status-accept"))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("status listener: accept() failed", error=exc.strerror or str(exc))
                await asyncio.sleep(_ACCEPT_PAUSE_SECONDS)
                continue
            if self.open >= self._limit:
                self._refuse(conn, peer)
                continue
            self.open += 1
            self._keep(loop.create_task(self._serve(conn)))

    def _refuse(self, conn: socket.socket, peer: object) -> None:
        with conn, contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(self._busy)
        self._on_refused(peer[0] if isinstance(peer, tuple) and peer else "?")

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=self._stream_limit)
        except OSError:
            conn.close()
            self.open -= 1
            return
        try:
            await self._handler(reader, writer)
        finally:
            writer.transport.abort()  # no-op once closed; frees the socket of a slow reader
            self.open -= 1

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Non-blocking sockets listening on every address `host` resolves to (as
    `asyncio.start_server` makes them); OSError when one cannot be had."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    made: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in made:
            sock.close()
        raise
    return made
