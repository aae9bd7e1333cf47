"""Which local user opened a TCP connection to us: the owner of the client's socket.

For a client on this host, the kernel holds both ends of the connection: ours, and the
client's socket, whose local address is the client's address and port and whose remote
address is ours. That socket's owner (the uid that created it) is who connects.

The kernel is asked for that one socket by its four addresses (sock_diag, what `ss` uses):
a hash lookup, so a burst of connections or a table of thousands of sockets costs the same
per connection. Where sock_diag is missing (no `tcp_diag` in the kernel, netlink forbidden),
`/proc/net/tcp` and `/proc/net/tcp6` are read instead, up to the line of that socket (a
cost growing with the table: a fallback, said once in the log).

The answer is trusted only for a live socket a process still holds: a client that closed
(its socket is then orphaned or in TIME_WAIT, which the kernel shows as uid 0) or reset its
socket before it could be identified is unknown, and unknown is refused by the caller.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

from wodmail.intake.hostaddrs import Address
from wodmail.intake.netlink import NETLINK_SOCK_DIAG, NetlinkSocket

log = structlog.get_logger(__name__)

Endpoint = tuple[Address, int]

SOCK_DIAG_BY_FAMILY = 20
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, ext, pad, states
_SOCKID_PORTS = struct.Struct("!HH")  # inet_diag_sockid: sport, dport (network order) ...
_SOCKID_TAIL = struct.Struct("=III")  # ... src[16], dst[16], then interface, cookie[2]
_MESSAGE = struct.Struct("=BBBB")  # inet_diag_msg: family, state, timer, retrans, sockid...
_MESSAGE_TAIL = struct.Struct("=IIIII")  # ... expires, rqueue, wqueue, uid, inode
_SOCKID_SIZE = _SOCKID_PORTS.size + 32 + _SOCKID_TAIL.size
_NO_COOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_LISTEN_STATE = 1 << 10

# The client's end of a connection we have not closed yet: established, or shut down for
# writing (netcat) or closed by the client (then FIN_WAIT1/2; held by a process only until
# it closes, which the inode tells).
_CLIENT_STATES = frozenset({1, 4, 5})  # TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2
_PROC_TABLES = {4: Path("/proc/net/tcp"), 6: Path("/proc/net/tcp6")}
_PROC_READ_BYTES = 1 << 16


class OwnerUnknown(Exception):
    """The client's socket was not found, or is not held by a process any more."""


class SocketOwners:
    """`owner(client, server)`: the uid owning the client's end of a TCP connection to us."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._diag: NetlinkSocket | None = None
        self._diag_usable: bool | None = None  # None: not tried yet

    @property
    def method(self) -> str:
        return "sock_diag" if self._diag_usable is not False else "/proc/net/tcp"

    def owner(self, client: Endpoint, server: Endpoint) -> int:
        """The uid that created the client's socket; OwnerUnknown saying why not."""
        if self._diag_usable is not False:
            try:
                return self._ask_kernel(client, server)
            except _DiagUnusable as exc:
                self._give_up_diag(str(exc))
        return owner_from_proc(client, server, self._proc)

    def _ask_kernel(self, client: Endpoint, server: Endpoint) -> int:
        diag = self._open_diag()
        try:
            answers = diag.request(SOCK_DIAG_BY_FAMILY, _lookup_request(client, server))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise OwnerUnknown("no such socket: the client closed or reset it") from None
            raise _DiagUnusable(f"sock_diag lookup failed: {exc}") from None
        if not answers:
            raise OwnerUnknown("no answer about the client's socket")
        return _owner_of(answers[0][1], client, server)

    def _open_diag(self) -> NetlinkSocket:
        if self._diag is not None:
            return self._diag
        try:
            diag = NetlinkSocket(NETLINK_SOCK_DIAG)
            # ENOENT means "no such socket" only when the kernel has TCP sock_diag at all
            # (without tcp_diag every lookup is ENOENT): ask once for its listeners.
            diag.request(SOCK_DIAG_BY_FAMILY, _listeners_request(), dump=True)
        except OSError as exc:
            raise _DiagUnusable(f"sock_diag unavailable: {exc}") from None
        self._diag, self._diag_usable = diag, True
        return diag

    def _give_up_diag(self, reason: str) -> None:
        log.warning("local clients are identified from /proc/net/tcp (slower)", reason=reason)
        self._diag_usable = False
        if self._diag is not None:
            self._diag.close()
            self._diag = None

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()
            self._diag = None


class _DiagUnusable(Exception):
    pass


def _family(address: Address) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def _raw(address: Address) -> bytes:
    return address.packed.ljust(16, b"\0")


def _sockid(local: Endpoint, remote: Endpoint) -> bytes:
    return (_SOCKID_PORTS.pack(local[1], remote[1]) + _raw(local[0]) + _raw(remote[0])
            + _SOCKID_TAIL.pack(0, _NO_COOKIE, _NO_COOKIE))


def _lookup_request(client: Endpoint, server: Endpoint) -> bytes:
    # Exact lookup (no dump flag): the socket whose local end is the client's address and
    # port, and whose remote end is ours.
    family = _family(client[0])
    return _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, _ALL_STATES) + _sockid(client, server)


def _listeners_request() -> bytes:
    zero: Endpoint = (ipaddress.IPv4Address(0), 0)
    return (_REQUEST.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, _LISTEN_STATE)
            + _sockid(zero, zero))


def _owner_of(message: bytes, client: Endpoint, server: Endpoint) -> int:
    """The uid in an inet_diag_msg, if it is the client's live socket."""
    family, state, _timer, _retrans = _MESSAGE.unpack_from(message)
    offset = _MESSAGE.size
    local_port, remote_port = _SOCKID_PORTS.unpack_from(message, offset)
    raw = message[offset + _SOCKID_PORTS.size: offset + _SOCKID_PORTS.size + 32]
    local = (_address(family, raw[:16]), local_port)
    remote = (_address(family, raw[16:]), remote_port)
    if (local, remote) != (client, server):
        raise OwnerUnknown("the kernel answered about another socket")
    *_, uid, inode = _MESSAGE_TAIL.unpack_from(message, offset + _SOCKID_SIZE)
    return _checked(state, uid, inode)


def _address(family: int, raw: bytes) -> Address:
    """An address of an inet_diag_sockid (an IPv6 socket's IPv4-mapped one as IPv4)."""
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    address = ipaddress.IPv6Address(raw)
    return address.ipv4_mapped or address


def _checked(state: int, uid: int, inode: int) -> int:
    if state not in _CLIENT_STATES:
        raise OwnerUnknown(f"the client's socket is in TCP state {state}: closed or not a client")
    if inode == 0:
        raise OwnerUnknown("the client closed its socket before it could be identified")
    return uid


# -- the /proc/net/tcp fallback ----------------------------------------------------------


def owner_from_proc(client: Endpoint, server: Endpoint, proc: Path = Path("/proc")) -> int:
    """The same answer as sock_diag's, from the kernel's text tables: the line whose local
    address is the client's and remote address ours (read up to that line only)."""
    for table, key in _proc_keys(client, server):
        path = proc / _PROC_TABLES[table].relative_to("/proc")
        try:
            line = _find_line(path, key)
        except OSError as exc:
            raise OwnerUnknown(f"cannot read {path}: {exc.strerror or exc}") from None
        if line is not None:
            return _owner_from_line(line)
    raise OwnerUnknown("no such socket: the client closed or reset it")


def _proc_keys(client: Endpoint, server: Endpoint) -> Iterator[tuple[int, str]]:
    """(table, `local rem` text) where the client's socket may be: an IPv4 client is an
    IPv4 socket, or an IPv6 one connected to an IPv4-mapped address."""
    if client[0].version == 4:
        yield 4, f"{_hex4(client)} {_hex4(server)}"
        yield 6, f"{_hex6(client, mapped=True)} {_hex6(server, mapped=True)}"
    else:
        yield 6, f"{_hex6(client)} {_hex6(server)}"


def _hex4(endpoint: Endpoint) -> str:
    # The kernel prints the address as a native-endian 32-bit number, the port as a number.
    word = int.from_bytes(endpoint[0].packed, sys.byteorder)
    return f"{word:08X}:{endpoint[1]:04X}"


def _hex6(endpoint: Endpoint, *, mapped: bool = False) -> str:
    address = endpoint[0]
    packed = (ipaddress.IPv6Address(f"::ffff:{address}") if mapped else address).packed
    words = (int.from_bytes(packed[i: i + 4], sys.byteorder) for i in range(0, 16, 4))
    return "".join(f"{word:08X}" for word in words) + f":{endpoint[1]:04X}"


def _find_line(path: Path, key: str) -> str | None:
    """The line of `path` containing `key`, reading no further than it."""
    with path.open("r", encoding="ascii", errors="replace") as table:
        rest = ""
        while chunk := table.read(_PROC_READ_BYTES):
            lines = (rest + chunk).split("\n")
            rest = lines.pop()
            for line in lines:
                if key in line:
                    return line
        return rest if key in rest else None


def _owner_from_line(line: str) -> int:
    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    fields = line.split()
    try:
        state, uid, inode = int(fields[3], 16), int(fields[7]), int(fields[9])
    except (IndexError, ValueError):
        raise OwnerUnknown(f"unreadable socket table line: {line.strip()!r}") from None
    return _checked(state, uid, inode)
