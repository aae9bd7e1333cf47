"""Who owns the client's end of a loopback connection, asked of the kernel (sock_diag) and
read from /proc/net/tcp (the fallback): both give the connecting process's uid, and neither
trusts a client that closed or reset its socket (the kernel shows those as uid 0).

Everything here is real sockets on this machine's loopback; nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from support.local_users import Holder
from wodmail.intake.hostaddrs import HostAddresses, parse_address
from wodmail.intake.sockowner import Endpoint, OwnerUnknown, SocketOwners, owner_from_proc

Lookup = Callable[[Endpoint, Endpoint], int]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


LISTENERS = [
    pytest.param(socket.AF_INET, "127.0.0.1", "127.0.0.1", id="ipv4"),
    pytest.param(socket.AF_INET6, "::1", "::1", id="ipv6",
                 marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")),
    # A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1.
    pytest.param(socket.AF_INET6, "::", "127.0.0.1", id="dual-stack",
                 marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6")),
    # ... and so does an IPv6 client connecting to an IPv4-mapped address (its socket is an
    # IPv6 one, listed in /proc/net/tcp6).
    pytest.param(socket.AF_INET6, "::", "::ffff:127.0.0.1", id="dual-stack-mapped-client",
                 marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6")),
]


@pytest.fixture
def owners() -> Iterator[SocketOwners]:
    found = SocketOwners()
    yield found
    found.close()


def _endpoint(name: tuple) -> Endpoint:
    address = parse_address(name[0])
    assert address is not None
    return address, int(name[1])


@contextmanager
def _connection(family: int, listen_on: str, connect_to: str) -> Iterator[
        tuple[socket.socket, Endpoint, Endpoint]]:
    """A client socket connected to a listener; yields it and the connection as the server
    sees it: (client, server) endpoints."""
    with socket.socket(family) as listener:
        listener.bind((listen_on, 0))
        listener.listen()
        client = socket.create_connection((connect_to, listener.getsockname()[1]), timeout=10)
        accepted, _ = listener.accept()
        with accepted:
            try:
                yield client, _endpoint(accepted.getpeername()), _endpoint(accepted.getsockname())
            finally:
                client.close()


def _lookups(owners: SocketOwners) -> dict[str, Lookup]:
    return {"sock_diag": owners.owner, "/proc/net/tcp": owner_from_proc}


@pytest.mark.parametrize(("family", "listen_on", "connect_to"), LISTENERS)
def test_both_ways_name_the_connecting_process(owners, family, listen_on, connect_to):
    with _connection(family, listen_on, connect_to) as (_client, peer, server):
        found = {name: lookup(peer, server) for name, lookup in _lookups(owners).items()}
    assert found == {"sock_diag": os.geteuid(), "/proc/net/tcp": os.geteuid()}
    assert owners.method == "sock_diag"


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize(("family", "listen_on", "connect_to"), LISTENERS)
def test_a_client_gone_before_it_is_identified_is_unknown(owners, family, listen_on,
                                                          connect_to, how):
    # A closed client's socket lingers in the kernel's tables (FIN_WAIT2, TIME_WAIT) with
    # uid 0 and no inode: taking that uid would let anyone pass as root by hanging up first.
    with _connection(family, listen_on, connect_to) as (client, peer, server):
        if how == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        for name, lookup in _lookups(owners).items():
            with pytest.raises(OwnerUnknown):
                lookup(peer, server)
                pytest.fail(f"{name} found an owner for a closed client")


def test_another_users_connection_has_that_users_uid(owners, throwaway_user):
    # A child process runs as the other user (setpriv) and holds its connection meanwhile.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        holder = Holder(throwaway_user, port, 1)
        try:
            accepted, _ = listener.accept()
            with accepted:
                accepted.sendall(b"220 hello\r\n")
                uid, _replies = holder.replies()
                peer, server = _endpoint(accepted.getpeername()), _endpoint(
                    accepted.getsockname())
                found = {name: lookup(peer, server) for name, lookup in _lookups(owners).items()}
        finally:
            holder.close()
    assert uid == throwaway_user.uid
    assert found == {"sock_diag": throwaway_user.uid, "/proc/net/tcp": throwaway_user.uid}


def test_a_missing_proc_is_unknown_not_an_error(tmp_path):
    with (
        _connection(socket.AF_INET, "127.0.0.1", "127.0.0.1") as (_client, peer, server),
        pytest.raises(OwnerUnknown, match="cannot read"),
    ):
        owner_from_proc(peer, server, tmp_path)


def test_host_addresses_are_those_ip_lists():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed: nothing to compare with")
    shown = subprocess.run(["ip", "-o", "address", "show"], capture_output=True, text=True,
                           check=True).stdout.split("\n")
    listed = {parse_address(line.split()[3].split("/")[0]) for line in shown if line.strip()}
    addresses = HostAddresses()
    try:
        assert addresses.current() == listed
        assert addresses.is_local(parse_address("127.0.0.5"))  # all of 127/8
        assert addresses.is_local(parse_address("::ffff:127.0.0.1"))
        outside = next(parse_address(f"198.51.100.{n}") for n in range(1, 255)
                       if parse_address(f"198.51.100.{n}") not in listed)
        assert not addresses.is_local(outside)
    finally:
        addresses.close()
