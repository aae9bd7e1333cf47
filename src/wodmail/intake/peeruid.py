"""Which local user holds the client's end of a TCP connection made from this machine.

Students have a terminal on the backend, so every one of them connects from 127.0.0.1 (or
::1). The kernel knows the uid owning the client's socket and tells it through sock_diag
netlink (what `ss -e` shows), asked for that one connection: a lookup costs tens of
microseconds whatever the number of sockets, where reading `/proc/net/tcp` costs
milliseconds on a busy host. The relay's rate limit counts per uid there, so one student's
flood spends only that student's budget.

Not found (None), and then counted per address: a client on another machine, a client that
has closed its socket already (an orphaned socket's uid is not reliable on every kernel),
or a kernel without sock_diag.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_TIME_WAIT = 6
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2 up to its socket id
_UID_INODE = struct.Struct("=II")  # in inet_diag_msg, after family..retrans (4) and the id (48)
_UID_OFFSET = 4 + 48 + 12
_TIMEOUT_SECONDS = 1.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def local_uid(peer: Any, local: Any) -> int | None:
    """The uid owning the socket at `peer` connected to `local` (socket address tuples, as
    `getpeername()` and `getsockname()` give them), if that socket is on this machine and
    still held by a process."""
    client, server = _endpoint(peer), _endpoint(local)
    if client is None or server is None:
        return None
    try:
        for family, client_ip, server_ip in _forms(client[0], server[0]):
            found = _ask(family, (client_ip, client[1]), (server_ip, server[1]))
            if found is not None:
                return found
    except OSError:  # no sock_diag here (kernel, sandbox): counted per address
        return None
    return None


def _endpoint(address: Any) -> tuple[Address, int] | None:
    if not isinstance(address, tuple | list) or len(address) < 2:
        return None
    try:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
        port = int(address[1])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
    return ip, port


def _forms(client: Address, server: Address) -> list[tuple[int, Address, Address]]:
    """The families the client's socket may have: an IPv4 connection comes from an IPv4
    socket, or (rarely) from an IPv6 one using mapped addresses."""
    if isinstance(client, ipaddress.IPv4Address) and isinstance(server, ipaddress.IPv4Address):
        return [(socket.AF_INET, client, server),
                (socket.AF_INET6, _mapped(client), _mapped(server))]
    return [(socket.AF_INET6, _v6(client), _v6(server))]


def _mapped(ip: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)


def _v6(ip: Address) -> ipaddress.IPv6Address:
    return ip if isinstance(ip, ipaddress.IPv6Address) else _mapped(ip)


def _ask(family: int, source: tuple[Address, int], destination: tuple[Address, int]) -> int | None:
    """One exact sock_diag lookup: the socket whose local end is `source`."""
    socket_id = (
        struct.pack("!HH", source[1], destination[1])
        + source[0].packed.ljust(16, b"\0")
        + destination[0].packed.ljust(16, b"\0")
        + struct.pack("=III", 0, _NOCOOKIE, _NOCOOKIE)  # any interface, no cookie
    )
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, _ALL_STATES) + socket_id
    header = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST,
                          1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as link:
        link.settimeout(_TIMEOUT_SECONDS)
        link.sendto(header + request, (0, 0))
        answer = link.recv(8192)
    return _uid_of(answer)


def _uid_of(answer: bytes) -> int | None:
    if len(answer) < _HEADER.size:
        return None
    _length, kind, _flags, _seq, _pid = _HEADER.unpack_from(answer)
    message = answer[_HEADER.size :]
    if kind != _SOCK_DIAG_BY_FAMILY or len(message) < _UID_OFFSET + _UID_INODE.size:
        return None  # an error (ENOENT: no such socket here)
    state = message[1]
    uid, inode = _UID_INODE.unpack_from(message, _UID_OFFSET)
    if state == _TIME_WAIT or inode == 0:
        return None  # closed, or orphaned by its process: its uid means nothing
    return int(uid)
