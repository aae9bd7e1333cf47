"""The peers' HTTP transport against real servers on loopback, each scripted to misbehave as
a web server or a proxy in front of the portal can: closing kept connections, hanging up
mid-answer, never answering, chunked and gzipped bodies, TLS with its own certificate."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wodmail.errors import PeerUnavailable
from wodmail.peers import transport
from wodmail.peers._http import send
from wodmail.peers.transport import StreamTransport

Reply = Callable[["Exchange"], Awaitable[bool]]
"""Answers one request; False to hang up afterwards."""


@dataclass
class Exchange:
    connection: int  # which accepted connection carries it (0, 1, ...)
    head: bytes
    body: bytes
    writer: asyncio.StreamWriter

    @property
    def method(self) -> str:
        return self.head.split(b" ", 1)[0].decode()

    async def answer(self, status: int = 200, body: bytes = b'{"ok": true}',
                     headers: tuple[str, ...] = ()) -> bool:
        lines = [f"HTTP/1.1 {status} X", *headers]
        if not any(h.lower().startswith("transfer-encoding") for h in headers):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        return True


@dataclass
class Server:
    """An HTTP/1.1 server whose answers the test scripts, one reply per request in order."""

    replies: list[Reply]
    exchanges: list[Exchange] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    ssl_context: ssl.SSLContext | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0,
                                                  ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                exchange = Exchange(number, head, body, writer)
                self.exchanges.append(exchange)
                if not self.replies or not await self.replies.pop(0)(exchange):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def ok(exchange: Exchange) -> bool:
    return await exchange.answer()


async def ok_then_close(exchange: Exchange) -> bool:
    await exchange.answer()
    return False


async def hang_up(exchange: Exchange) -> bool:
    return False


def client(url: str, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=5,
                             transport=StreamTransport(**kwargs))  # type: ignore[arg-type]


async def test_requests_share_one_kept_connection():
    async with Server([ok, ok, ok]) as server, client(server.url) as http:
        for _ in range(3):
            response = await http.put("/student/1", json={"password": "x"})
            assert response.json() == {"ok": True}
    assert server.connections == 1
    assert [e.method for e in server.exchanges] == ["PUT"] * 3
    assert server.exchanges[0].body == b'{"password":"x"}'


async def test_a_connection_the_server_closed_is_not_used_again():
    async with Server([ok_then_close, ok]) as server, client(server.url) as http:
        await http.get("/a")
        await asyncio.sleep(0)  # the loop sees the server's FIN
        assert (await http.post("/b")).status_code == 200  # a POST: must not be sent twice
    assert server.connections == 2
    assert [e.method for e in server.exchanges] == ["GET", "POST"]


async def test_a_put_on_a_kept_connection_dropped_meanwhile_is_sent_again_once():
    async with Server([ok, hang_up, ok]) as server, client(server.url) as http:
        await http.get("/a")
        response = await http.put("/student/1", json={"password": "x"})
    assert response.status_code == 200
    assert [(e.connection, e.method) for e in server.exchanges] == [
        (0, "GET"), (0, "PUT"), (1, "PUT")
    ]


async def test_a_post_on_a_kept_connection_dropped_meanwhile_is_not_sent_again():
    async with Server([ok, hang_up, ok]) as server, client(server.url) as http:
        await http.get("/a")
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/hub/api/users/student1/server")
    assert [e.method for e in server.exchanges] == ["GET", "POST"]


async def test_a_fresh_connection_dropped_before_the_answer_is_a_protocol_error():
    async with Server([hang_up]) as server, client(server.url) as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.put("/x")
    assert server.connections == 1


async def test_a_body_cut_short_is_an_error_and_the_connection_is_dropped():
    async def truncated(exchange: Exchange) -> bool:
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"half")
        await exchange.writer.drain()
        return False

    async with Server([truncated, ok]) as server, client(server.url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/a")
        assert (await http.get("/b")).status_code == 200
    assert server.connections == 2


async def test_chunked_and_gzipped_answers_are_read_whole():
    payload = b'{"items": [' + b", ".join(b'"student%d"' % n for n in range(2000)) + b"]}"
    packed = gzip.compress(payload)

    async def chunked(exchange: Exchange) -> bool:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(packed[i:i + 500]), packed[i:i + 500])
                          for i in range(0, len(packed), 500))
        return await exchange.answer(body=chunks + b"0\r\n\r\n", headers=(
            "Transfer-Encoding: chunked", "Content-Encoding: gzip"))

    async with Server([chunked, ok]) as server, client(server.url) as http:
        response = await http.get("/hub/api/users")
        assert len(response.json()["items"]) == 2000
        await http.get("/again")
    assert server.connections == 1  # the chunked answer was read to its end


async def test_a_peer_that_never_answers_times_out_and_becomes_peer_unavailable():
    async def silent(exchange: Exchange) -> bool:
        await asyncio.sleep(3600)
        return False

    async with Server([silent]) as server:
        http = httpx.AsyncClient(base_url=server.url, timeout=0.3, transport=StreamTransport())
        async with http:
            with pytest.raises(PeerUnavailable, match="no answer within 0.3 s"):
                await send(http, peer="portal", event="portal call", method="GET", path="/x")


async def test_a_refused_connection_becomes_peer_unavailable(unused_tcp_port):
    async with client(f"http://127.0.0.1:{unused_tcp_port}") as http:
        with pytest.raises(PeerUnavailable, match="cannot reach"):
            await send(http, peer="hub", event="hub call", method="GET", path="/hub/api/user")


async def test_a_request_cancelled_midway_leaves_no_connection_to_reuse():
    async def slow(exchange: Exchange) -> bool:
        await asyncio.sleep(0.5)
        return await exchange.answer()

    async with Server([slow, ok]) as server, client(server.url) as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await http.get("/slow")
        assert (await http.get("/next")).json() == {"ok": True}
    assert server.connections == 2  # the late answer to /slow was never taken for /next's


# --- TLS ---------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client context that
    trusts only that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    trusting = ssl.create_default_context(cafile=str(cert_file))
    return server, trusting


async def test_https_peers_are_verified(tmp_path):
    server_context, trusting = self_signed(tmp_path)
    async with Server([ok, ok], ssl_context=server_context) as server:
        async with client(server.url, ssl_context=trusting) as http:
            assert (await http.get("/api/workshops")).json() == {"ok": True}
        async with client(server.url) as http:  # the default CAs do not know this one
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get("/api/workshops")


# --- proxies -----------------------------------------------------------------------------


def test_urls_the_environment_sends_through_a_proxy_keep_httpx_s_own_transport(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert transport.usable_for("http://portal.example:8000/api")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not transport.usable_for("http://portal.example:8000/api")
    assert transport.usable_for("https://portal.example/api")  # no proxy for https
    monkeypatch.setenv("NO_PROXY", "portal.example,localhost")
    assert transport.usable_for("http://portal.example:8000/api")
