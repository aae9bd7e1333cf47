"""What the relay's checks cost a relayed mail, on the event loop, before its 250.

Prints p50/p99 in microseconds, per mail, of: the sender and recipient check on a portal
credentials mail and on a MIME mail with From, To and Bcc headers (`RelayPolicy.check`); the
rate limit (`SlidingWindow.take`, 1000 clients); the uid lookup of a loopback client (one
sock_diag netlink request, done once per session); and, for comparison, reading
/proc/net/tcp once (what a table scan would cost with this host's sockets).

Run: .venv/bin/python bench/relay_checks.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import statistics
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from _cli import positive  # bench/ is on sys.path when a script runs

from wodmail.config import Relay
from wodmail.intake.sockowner import SocketOwners
from wodmail.relay.policy import RelayPolicy

SENDER = "wod@example.org"


def timed(rounds: int, work: Callable[[int], object]) -> str:
    samples = []
    for n in range(rounds):
        start = time.perf_counter()
        work(n)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    p99 = samples[int(rounds * 0.99) - 1]
    return f"p50 {statistics.median(samples):7.1f} us, p99 {p99:7.1f} us"


def mime_mail() -> bytes:
    mail = EmailMessage()
    mail["From"] = f"WoD <{SENDER}>"
    mail["To"] = "jane@example.com"
    mail["Bcc"] = "hidden@example.net"
    mail["Subject"] = "Your credentials"
    mail.set_content("Hello Jane,\n" * 40)
    mail.add_alternative("<p>Hello Jane</p>" * 40, subtype="html")
    return mail.as_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=positive, default=2000)
    rounds = parser.parse_args().rounds
    policy = RelayPolicy(Relay(host="smtp.example.org", max_per_minute=10**9), [SENDER])
    portal = (b"Subject: Workshops-on-Demand credentials\n" + b"User Name: student4\n" * 30)
    mime = mime_mail()
    print(f"check, portal mail:   {timed(rounds, lambda n: policy.check(SENDER, ['j@x'], portal))}")
    print(f"check, MIME mail:     {timed(rounds, lambda n: policy.check(SENDER, ['j@x'], mime))}")
    print(f"rate limit:           {timed(rounds, lambda n: policy.rate.take(str(n % 1000)))}")
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        peer, local = accepted.getpeername(), accepted.getsockname()
        owners = SocketOwners()
        client_end = (ipaddress.ip_address(peer[0]), peer[1])
        server_end = (ipaddress.ip_address(local[0]), local[1])
        print(f"uid lookup (sock_diag): "
              f"{timed(rounds, lambda n: owners.owner(client_end, server_end))}")
        owners.close()
        client.close()
        accepted.close()
    table = Path("/proc/net/tcp")
    if table.exists():
        lines = len(table.read_text().splitlines()) - 1
        print(f"/proc/net/tcp read:   {timed(min(rounds, 200), lambda n: table.read_bytes())}"
              f" ({lines} sockets)")


if __name__ == "__main__":
    main()
