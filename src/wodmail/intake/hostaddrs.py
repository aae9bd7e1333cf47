"""Is a client address one of this host's own? Then the client is a local process.

Loopback (127.0.0.0/8, ::1) always is. Any other address counts when an interface of this
host has it right now, as the kernel lists them (netlink RTM_GETADDR, what `ip address`
shows): a student may bind the backend's public address as the source of a connection to
127.0.0.1, or connect to it when wodmail listens on 0.0.0.0. The list is asked for on every
question, so an address added or removed since the start counts at once; only peers that
are not on loopback ask (the portal's connections), which are few.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

from wodmail.intake.netlink import NETLINK_ROUTE, NetlinkSocket, align

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

RTM_NEWADDR = 20
RTM_GETADDR = 22
IFA_ADDRESS = 1
IFA_LOCAL = 2
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, interface index
_RTATTR = struct.Struct("=HH")  # length, type

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class HostAddressError(Exception):
    """This host's addresses cannot be read (no netlink here)."""


def parse_address(host: str) -> Address | None:
    """`host` as an address (an IPv4-mapped IPv6 one as IPv4, a %zone dropped); None if it
    is not one."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(address: Address) -> bool:
    return any(address in net for net in _LOOPBACK)


class HostAddresses:
    """Answers whether an address is this host's; HostAddressError if it cannot tell."""

    def __init__(self) -> None:
        self._netlink: NetlinkSocket | None = None

    def is_local(self, address: Address) -> bool:
        return is_loopback(address) or address in self.current()

    def current(self) -> set[Address]:
        """Every address on this host's interfaces now (IPv4-mapped ones as IPv4)."""
        try:
            if self._netlink is None:
                self._netlink = NetlinkSocket(NETLINK_ROUTE)
            request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            answers = self._netlink.request(RTM_GETADDR, request, dump=True)
        except OSError as exc:
            self.close()
            raise HostAddressError(f"cannot list this host's addresses: {exc}") from None
        return {address for kind, body in answers if kind == RTM_NEWADDR
                for address in _addresses(body)}

    def close(self) -> None:
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None


def _addresses(message: bytes) -> Iterator[Address]:
    """The host's own address(es) in one RTM_NEWADDR message."""
    family = message[0]
    attributes = dict(_attributes(message[_IFADDRMSG.size:]))
    # IFA_LOCAL is the interface's own address; on a point-to-point link IFA_ADDRESS is the
    # other end's. IPv6 usually sends only IFA_ADDRESS, which is then its own.
    raw = attributes.get(IFA_LOCAL) or attributes.get(IFA_ADDRESS)
    if family == socket.AF_INET and raw is not None and len(raw) == 4:
        yield ipaddress.IPv4Address(raw)
    elif family == socket.AF_INET6 and raw is not None and len(raw) == 16:
        address = ipaddress.IPv6Address(raw)
        yield address.ipv4_mapped or address


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind, data[offset + _RTATTR.size: offset + length]
        offset += align(length)
