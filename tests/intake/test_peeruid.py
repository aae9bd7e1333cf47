"""Which local uid holds the client's end of a connection: real loopback sockets, asked of
the real kernel (sock_diag netlink)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest

from wodmail.intake.peeruid import local_uid

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="Linux only: sock_diag netlink")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET6)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # as a `::` listener is
    server.bind(("::", 0))
    server.listen()
    yield server
    server.close()


@needs_linux
@pytest.mark.parametrize("client_host", ["127.0.0.1", "::1"])
def test_the_uid_of_a_local_client_is_found_until_it_closes(listener, client_host):
    client = socket.create_connection((client_host, listener.getsockname()[1]), timeout=30)
    accepted, _ = listener.accept()
    with accepted:
        peer, local = accepted.getpeername(), accepted.getsockname()
        assert local_uid(peer, local) == os.getuid()
        client.close()  # no process owns that end any more: nobody to name
        assert local_uid(peer, local) is None


def test_no_uid_for_a_client_that_is_not_on_this_machine():
    assert local_uid(("192.0.2.7", 4000), ("127.0.0.1", 10025)) is None
    assert local_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) is None  # no such connection
    assert local_uid("not an address", ("127.0.0.1", 10025)) is None
    assert local_uid(("127.0.0.1", 4000), None) is None
