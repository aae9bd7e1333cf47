"""The connection gate: who may open an SMTP session at all, and how many at once.

Checked when a connection is made, before any session exists, in this order:

1. the peer's address must be in `allowed_networks`, else `554`;
2. a peer on this host (loopback, or any of this host's addresses) is identified by the
   uid owning its socket, which must be in `listen.local_users`, else `554`; a local peer
   that cannot be identified (it closed or reset its socket first, the kernel's tables
   cannot be read) is refused the same way: typing the portal's address as sender proves
   nothing on a host where students have a shell. Remote peers go on as before (their
   sender is checked per mail);
3. at most `listen.max_connections` sessions at once, and per peer at most
   `listen.max_connections_per_ip` (remote, by address) or `max_connections_per_uid`
   (local, by uid), else `421`.

A refused connection gets one reply line and is closed at once: no session, no journal
row, no log line of its own; refusals are counted in the metrics and summed up once per
burst (see `bursts`), with the uid and user name of refused local peers.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog

from wodmail import metrics
from wodmail.config import Config
from wodmail.intake import localusers
from wodmail.intake.bursts import BurstLog
from wodmail.intake.hostaddrs import HostAddressError, HostAddresses, parse_address
from wodmail.intake.localusers import LocalUsers
from wodmail.intake.sockowner import OwnerUnknown, SocketOwners

log = structlog.get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_host(peer: Any) -> str | None:
    """The address part of a socket peer name (('1.2.3.4', 5678) -> '1.2.3.4')."""
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return str(peer) if peer else None


def in_networks(host: str | None, networks: list[Network]) -> bool:
    """Whether `host` (an IP address, maybe IPv4-mapped or with a %zone) is in `networks`."""
    address = parse_address(host) if host is not None else None
    return address is not None and any(address in net for net in networks)


@dataclass(frozen=True)
class GatePolicy:
    networks: list[Network]
    max_connections: int
    max_per_ip: int
    max_per_uid: int
    local_users: LocalUsers

    @classmethod
    def from_config(cls, config: Config) -> GatePolicy:
        listen = config.listen
        users = localusers.resolve(listen.local_users, config.accounts.admin_user)
        if users.unknown:
            # A name in an explicit list is a mistake; a default WODUSER this host lacks (a
            # sandbox, whose accounts live under accounts.root) only allows nobody more.
            (log.warning if users.explicit else log.info)(
                "listen.local_users: no such user on this host; left out",
                users=list(users.unknown))
        return cls(
            networks=config.networks(),
            max_connections=listen.max_connections,
            max_per_ip=listen.max_connections_per_ip,
            max_per_uid=listen.max_connections_per_uid,
            local_users=users,
        )


@dataclass(frozen=True)
class Peer:
    """Who is connecting: a remote address, or a local process's uid (and its address)."""

    host: str
    uid: int | None = None

    @property
    def key(self) -> str:
        return self.host if self.uid is None else f"uid {self.uid}"

    @property
    def label(self) -> str:
        return self.host if self.uid is None else f"{self.host} {localusers.label(self.uid)}"


@dataclass(frozen=True)
class Admission:
    """The gate's answer: `refusal` (the reply line) or None, and who the peer is."""

    refusal: str | None
    peer: Peer | None = None


class ConnectionGate:
    """Admits or refuses each new connection; counts the admitted ones until released."""

    def __init__(self, policy: GatePolicy, *, owners: SocketOwners | None = None,
                 addresses: HostAddresses | None = None) -> None:
        self.configure(policy)
        self._owners = owners or SocketOwners()
        self._addresses = addresses or HostAddresses()
        self.open = 0
        self._per_peer: Counter[str] = Counter()
        self.refused = BurstLog("connections refused (summary of a burst)")

    def configure(self, policy: GatePolicy) -> None:
        """New limits, for connections from now on (a reload keeps open sessions)."""
        if policy.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {policy.max_connections}")
        self.policy = policy

    @property
    def max_connections(self) -> int:
        return self.policy.max_connections

    def admit(self, peer: Any, local: Any) -> Admission:
        """`peer` and `local`: the connection's two socket names (peername, sockname).
        An admitted connection is `release`d once, with the admission's peer."""
        host = str(peer_host(peer))
        if not in_networks(host, self.policy.networks):
            return self._refuse(f"{host}: not in allowed_networks", "network",
                                f"554 5.7.1 client {host} is not in allowed_networks")
        who = self._identify(host, peer, local)
        if isinstance(who, str):
            return self._refuse(f"{host}: {who}", "user",
                                "554 5.7.1 cannot tell which local user this connection is "
                                "from (listen.local_users); refused")
        if who.uid is not None and not self.policy.local_users.allows(who.uid):
            return self._refuse(f"{who.label}: not in listen.local_users", "user",
                                f"554 5.7.1 local user uid {who.uid} may not send orders "
                                "(listen.local_users)")
        refusal = self._over_a_cap(who)
        if refusal is not None:
            return refusal
        self.open += 1
        self._per_peer[who.key] += 1
        return Admission(None, who)

    def release(self, peer: Peer) -> None:
        self.open = max(0, self.open - 1)
        self._per_peer[peer.key] -= 1
        if self._per_peer[peer.key] <= 0:
            del self._per_peer[peer.key]

    def timed_out(self, peer: Peer | None, seconds: float) -> None:
        """A session closed for sending no command within the greeting timeout."""
        where = peer.label if peer is not None else "?"
        self.refused.add(f"{where}: no command within listen.greeting_timeout_seconds",
                         timeout_seconds=seconds)

    def _identify(self, host: str, peer: Any, local: Any) -> Peer | str:
        """The peer (with its uid if it is on this host), or why a local one is unknown."""
        address = parse_address(host)
        if address is None:
            return Peer(host)  # not an IP peer (cannot happen on a TCP listener)
        try:
            if not self._addresses.is_local(address):
                return Peer(host)
        except HostAddressError as exc:
            return f"cannot tell whether it is a local client ({exc})"
        client = (address, int(peer[1]))
        server_address = parse_address(peer_host(local) or "")
        if server_address is None:
            return "our own socket address is unknown"
        try:
            return Peer(host, self._owners.owner(client, (server_address, int(local[1]))))
        except OwnerUnknown as exc:
            return f"local client not identified: {exc}"

    def _over_a_cap(self, who: Peer) -> Admission | None:
        policy = self.policy
        if self.open >= policy.max_connections:
            self.refused.add(f"{who.host}: over listen.max_connections",
                             limit=policy.max_connections)
            metrics.refused_kind("capacity")
            return Admission(f"421 4.7.0 too many connections (listen.max_connections"
                             f" {policy.max_connections}), try again later", who)
        key, cap = ("uid", policy.max_per_uid) if who.uid is not None else ("ip", policy.max_per_ip)
        if self._per_peer[who.key] < cap:
            return None
        source = f"uid {who.uid}" if who.uid is not None else who.host
        return self._refuse(f"{who.label}: over listen.max_connections_per_{key}",
                            "peer_capacity",
                            f"421 4.7.0 too many connections from {source}"
                            f" (listen.max_connections_per_{key} {cap}), try again later")

    def _refuse(self, summary_key: str, kind: str, reply: str) -> Admission:
        self.refused.add(summary_key)
        metrics.refused_kind(kind)
        return Admission(reply)

    def close(self) -> None:
        self._owners.close()
        self._addresses.close()
