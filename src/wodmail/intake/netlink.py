"""Asking the kernel over netlink: one request, its reply messages (Linux only).

Only what the gate needs: a request goes out on a netlink socket of a given family, and the
messages answering it (matched by sequence number) come back as (type, payload) pairs, up to
`NLMSG_DONE` for a dump. An error reply is raised as `OSError` with the kernel's errno.
The kernel answers these requests synchronously, while the request is being sent, so none
of this waits on anything but a system call; the socket still has a timeout, for safety.
"""

from __future__ import annotations

import errno
import itertools
import socket
import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4

NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
_ERROR = struct.Struct("=i")  # struct nlmsgerr starts with a negative errno
_RECEIVE_BYTES = 65536
_TIMEOUT_SECONDS = 1.0


def align(length: int) -> int:
    """Netlink pads every message and attribute to 4 bytes."""
    return (length + 3) & ~3


class NetlinkSocket:
    """A netlink socket of `family` (NETLINK_ROUTE, NETLINK_SOCK_DIAG) kept open for reuse.

    Creating it raises OSError where netlink is not available (no Linux, or forbidden by a
    sandbox such as systemd's RestrictAddressFamilies).
    """

    def __init__(self, family: int) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, family)
        self._sock.settimeout(_TIMEOUT_SECONDS)
        self._sock.bind((0, 0))
        self._sequence = itertools.count(1)

    def request(self, kind: int, payload: bytes, *, dump: bool = False) -> list[tuple[int, bytes]]:
        """Sends one request; returns the (type, payload) of each message answering it."""
        sequence = next(self._sequence) & 0xFFFFFFFF
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self._sock.send(_HEADER.pack(_HEADER.size + len(payload), kind, flags, sequence, 0)
                        + payload)
        answers: list[tuple[int, bytes]] = []
        while True:
            for kind_, seq, body in _messages(self._sock.recv(_RECEIVE_BYTES)):
                if seq != sequence:
                    continue  # a late answer to an earlier request that timed out
                if kind_ == NLMSG_ERROR:
                    code = -_ERROR.unpack_from(body)[0]
                    if code == 0:  # an acknowledgement, not an error
                        return answers
                    raise OSError(code, errno.errorcode.get(code, str(code)))
                if kind_ == NLMSG_DONE:
                    return answers
                answers.append((kind_, body))
                if not dump:
                    return answers

    def close(self) -> None:
        self._sock.close()


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, sequence, payload) of each message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, sequence, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            return  # truncated: nothing after it can be trusted
        yield kind, sequence, data[offset + _HEADER.size: offset + length]
        offset += align(length)
