"""The connection gate: who may open an SMTP session at all, and how many at once.

Checked when a connection is made, before any session exists: a peer outside
`allowed_networks` gets one `554` line and the connection is closed at once; a connection
over `listen.max_connections` gets `421` and is closed. Neither costs a session, a journal
row or a log line of its own: refusals are summed up once per burst (see `bursts`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from wodmail import metrics
from wodmail.intake.bursts import BurstLog

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_host(peer: Any) -> str | None:
    """The address part of a socket peer name (('1.2.3.4', 5678) -> '1.2.3.4')."""
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return str(peer) if peer else None


def in_networks(host: str | None, networks: list[Network]) -> bool:
    """Whether `host` (an IP address, maybe IPv4-mapped or with a %zone) is in `networks`."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


class ConnectionGate:
    """Admits or refuses each new connection; counts the admitted ones until released."""

    def __init__(self, networks: list[Network], max_connections: int) -> None:
        self.configure(networks, max_connections)
        self.open = 0
        self.refused = BurstLog("connections refused (summary of a burst)")

    def configure(self, networks: list[Network], max_connections: int) -> None:
        """New limits, for connections from now on (a reload keeps open sessions)."""
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._networks = networks
        self.max_connections = max_connections

    def admit(self, peer: Any) -> str | None:
        """None if the connection may proceed (then `release` it once), else the reply line."""
        host = peer_host(peer)
        if not in_networks(host, self._networks):
            self.refused.add(f"{host}: not in allowed_networks")
            metrics.refused_kind("network")
            return f"554 5.7.1 client {host} is not in allowed_networks"
        if self.open >= self.max_connections:
            self.refused.add(f"{host}: over listen.max_connections", limit=self.max_connections)
            metrics.refused_kind("capacity")
            return (
                f"421 4.7.0 too many connections (listen.max_connections"
                f" {self.max_connections}), try again later"
            )
        self.open += 1
        return None

    def release(self) -> None:
        self.open = max(0, self.open - 1)
