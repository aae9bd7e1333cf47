"""A smarthost stand-in on loopback, for the relay's tests: a real aiosmtpd server.

It records every mail it accepts (envelope and bytes as received), can refuse with a
reply of your choosing for a number of mails, be down (not started yet: connections are
refused), or hang (`HungSmarthost`: the connection is taken, no greeting ever comes).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smarthost stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smarthost.pem", folder / "smarthost.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # as the client sent it (CRLF), dot-unstuffed
    helo: str | None


class Smarthost:
    """`refuse(reply, times)`: the next `times` mails get `reply` (e.g. a 451) after DATA;
    `refuse_recipient(address, reply, times)` does the same for one RCPT TO.

    `tls`: "starttls" (required before MAIL) or "tls" (implicit, as on port 465), with the
    certificate `make_certificate` made; `login`: (user, password) required before MAIL."""

    def __init__(
        self,
        port: int | None = None,
        *,
        tls: str = "none",
        certificate: tuple[Path, Path] | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self._tls = tls
        self._certificate = certificate
        self._login = login
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._refusal: str | None = None
        self._refusals_left = 0
        self._recipient_refusals: dict[str, tuple[str, int]] = {}
        self.refused = 0
        self._controller: Controller | None = None

    def start(self) -> Smarthost:
        options: dict[str, Any] = {}
        if self._tls != "none":
            assert self._certificate is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._certificate)
            if self._tls == "starttls":
                options.update(tls_context=context, require_starttls=True)
            else:
                # aiosmtpd offers AUTH only after STARTTLS unless told the link is safe
                options.update(ssl_context=context, auth_require_tls=False)
        if self._login is not None:
            options.update(authenticator=self._authenticate, auth_required=True)
        self._controller = Controller(self, hostname=LOOPBACK, port=self.port, **options)
        self._controller.start()
        return self

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        given = (data.login.decode(), data.password.decode()) if isinstance(
            data, LoginPassword) else None
        # handled=False: aiosmtpd then answers a failure with its 535 itself
        return AuthResult(success=given == self._login, handled=False)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def refuse(self, reply: str, times: int) -> None:
        with self._lock:
            self._refusal, self._refusals_left = reply, times

    def refuse_recipient(self, address: str, reply: str, times: int) -> None:
        """RCPT TO `address` gets `reply` (e.g. 450 or 550) the next `times` times."""
        with self._lock:
            self._recipient_refusals[address] = (reply, times)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            reply, left = self._recipient_refusals.get(address, ("", 0))
            if left > 0:
                self._recipient_refusals[address] = (reply, left - 1)
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def mails(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self._refusals_left > 0:
                self._refusals_left -= 1
                self.refused += 1
                assert self._refusal is not None
                return self._refusal
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    content=bytes(envelope.original_content),
                    helo=session.host_name,
                )
            )
            return f"250 2.0.0 Ok: queued as SH{len(self.received)}"


class HungSmarthost:
    """Listens but never accepts: the kernel completes the handshake, no greeting follows."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._sock = socket.create_server((LOOPBACK, self.port), backlog=16)

    def stop(self) -> None:
        self._sock.close()
