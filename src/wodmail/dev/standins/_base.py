"""What both stand-ins share: a real HTTP server on loopback, a call log, failure injection.

A stand-in runs `http.server.ThreadingHTTPServer` on 127.0.0.1 (ephemeral port) in a
background thread, so sync tests, async tests and a demo script can all talk to it over
real sockets. Subclasses only implement `_route` (and, if a body holds a secret,
`_recordable_body`).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

NO_JSON = object()
"""`StandinRequest.json()` returns this when the body is absent or not JSON."""


@dataclass(frozen=True)
class RecordedCall:
    """One request as a stand-in saw it. `status` is None when the connection was dropped."""

    method: str
    path: str
    json: Any
    status: int | None
    at: float = field(default_factory=time.monotonic, compare=False)  # when handled (monotonic)


@dataclass(frozen=True)
class StandinRequest:
    method: str
    path: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return NO_JSON
        try:
            return json.loads(self.body)
        except ValueError:
            return NO_JSON


@dataclass(frozen=True)
class StandinResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    truncated: bool = False  # send half the body (Content-Length of the whole), then hang up

    @classmethod
    def of_json(cls, status: int, payload: Any) -> StandinResponse:
        return cls(status, json.dumps(payload).encode(), "application/json; charset=utf-8")

    @classmethod
    def of_text(cls, status: int, text: str) -> StandinResponse:
        return cls(status, text.encode())


class StandinServer:
    """Base of the stand-ins: lifecycle, call log, `set_down`, `fail_next`, `set_delay`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._calls: list[RecordedCall] = []
        self._down = False
        self._drop_when_down = False
        self._failures: list[int] = []
        self._truncations = 0
        self._delay = 0.0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:<port>`, without any base path."""
        return f"http://127.0.0.1:{self.port}"

    # call log

    @property
    def calls(self) -> list[RecordedCall]:
        """A copy of every request seen so far, in arrival order (no headers, no tokens)."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # failure injection

    def set_down(self, down: bool = True, *, drop: bool = False) -> None:
        """While down, answer every request 503, or with `drop` close the connection unanswered."""
        with self._lock:
            self._down = down
            self._drop_when_down = drop

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next `n` requests (whatever they are) with `status`."""
        if n < 0:
            raise ValueError(f"fail_next needs n >= 0, got {n}")
        with self._lock:
            self._failures.extend([status] * n)

    def truncate_next(self, n: int = 1) -> None:
        """Handle the next `n` requests, then cut each answer short: half its body is sent
        and the connection closed (what a proxy or a crashing peer does mid-response)."""
        if n < 0:
            raise ValueError(f"truncate_next needs n >= 0, got {n}")
        with self._lock:
            self._truncations += n

    def set_delay(self, seconds: float) -> None:
        """Wait `seconds` before answering each request (to provoke client timeouts)."""
        if seconds < 0:
            raise ValueError(f"set_delay needs seconds >= 0, got {seconds}")
        with self._lock:
            self._delay = seconds

    # request handling, called from the server's threads

    def _handle(self, request: StandinRequest) -> StandinResponse | None:
        with self._lock:
            delay = self._delay
        if delay:
            self._stopping.wait(delay)
        with self._lock:
            response = self._injected_failure()
            if response is None and not (self._down and self._drop_when_down):
                response = self._route_or_report(request)
                if self._truncations:
                    self._truncations -= 1
                    response = dataclasses.replace(response, truncated=True)
            self._calls.append(
                RecordedCall(
                    method=request.method,
                    path=request.path,
                    json=self._recordable_body(request),
                    status=None if response is None else response.status,
                )
            )
            return response

    def _route_or_report(self, request: StandinRequest) -> StandinResponse:
        """A bug in a stand-in shows up as a 500 naming it, not as a silently dropped line."""
        try:
            return self._route(request)
        except Exception:
            return StandinResponse.of_text(500, "stand-in error:\n" + traceback.format_exc())

    def _injected_failure(self) -> StandinResponse | None:
        if self._down and not self._drop_when_down:
            return StandinResponse.of_text(503, "Service Unavailable")
        if self._failures:
            status = self._failures.pop(0)
            return StandinResponse.of_json(status, {"message": f"injected failure ({status})"})
        return None

    def _route(self, request: StandinRequest) -> StandinResponse:
        raise NotImplementedError

    def _recordable_body(self, request: StandinRequest) -> Any:
        body = request.json()
        return None if body is NO_JSON else body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: StandinServer) -> None:
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_open_connections(self) -> None:
        """Keep-alive connections outlive `shutdown()`; end them so a stopped stand-in is gone."""
        with self._connections_lock:
            connections: Iterable[socket.socket] = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is expected here; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, delayed ACKs add ~40 ms a call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = StandinRequest(self.command, self.path, self.headers, body)
        response = self.server.standin._handle(request)
        if response is None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.truncated:
            self.wfile.write(response.body[: len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve
