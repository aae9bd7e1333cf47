"""The real order senders (portal, netcat tool, mail software), byte for byte, for tests."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from email.message import EmailMessage


def portal_bytes(subject: str, body: str, *, sender: str = "sender@example.org") -> bytes:
    """The registration portal's whole transaction: bare LF, no blank line, no QUIT."""
    return (
        "HELO api.example.org\n"
        f"MAIL FROM: {sender}\n"
        "RCPT TO: wodadmin@backend.example.org\n"
        "DATA\n"
        f"Subject: {subject}\n"
        f"{body}\n"
        ".\n"
    ).encode()


def netcat_bytes(subject: str, body: str, *, sender: str = "sender@example.org") -> bytes:
    """The old admin tool piped through netcat: no HELO, bare LF, a blank line, QUIT."""
    return (
        f"MAIL FROM: {sender}\n"
        "RCPT TO: wodadmin@backend\n"
        "DATA\n"
        f"Subject: {subject}\n"
        "\n"
        f"{body}\n"
        ".\n"
        "QUIT\n"
    ).encode()


def send_portal_style(host: str, port: int, subject: str, body: str, **kw: str) -> None:
    """Connects, writes everything at once, hangs up on the first byte of the greeting."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(portal_bytes(subject, body, **kw))
        sock.recv(1)


async def send_portal_style_async(host: str, port: int, subject: str, body: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(portal_bytes(subject, body))
    await writer.drain()
    await reader.read(1)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


def send_netcat_style(host: str, port: int, subject: str, body: str) -> bytes:
    """Pipes the admin tool's lines and reads everything the server says until it closes."""
    return converse(host, port, netcat_bytes(subject, body), timeout=10)


def converse(host: str, port: int, data: bytes, *, timeout: float = 60) -> bytes:
    """Writes a whole session at once, then reads every reply until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def send_smtplib(
    host: str,
    port: int,
    subject: str,
    body: str,
    *,
    sender: str = "sender@example.org",
    message_id: str | None = None,
) -> tuple[int, bytes]:
    """Ordinary mail software: EHLO, CRLF, full headers, MIME."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "wodadmin@backend.example.org"
    message["Subject"] = subject
    if message_id:
        message["Message-ID"] = message_id
    message.set_content(body)
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.ehlo("client.example.org")
        smtp.mail(sender)
        smtp.rcpt("wodadmin@backend.example.org")
        return smtp.data(message.as_bytes())
