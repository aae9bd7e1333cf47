"""wodmail.host.ldap against a real slapd on loopback (see slapd_fixture)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from ldap3 import Connection, Server
from structlog.testing import capture_logs

from support.slapd_fixture import Slapd, free_port
from wodmail.errors import (
    AccountError,
    PeerMisconfigured,
    PeerRefused,
    PeerUnavailable,
    TransientError,
)
from wodmail.host.ldap import LdapSettings, set_ldap_password

NEW_PASSWORD = "Fresh-Pass-42"


def settings_for(server: Slapd, **overrides: object) -> LdapSettings:
    values: dict[str, object] = {
        "server": server.host,
        "port": server.port,
        "base_dn": server.base_dn,
        "bind_dn": server.bind_dn,
        "password": server.bind_password,
        "timeout": 5,
    }
    values.update(overrides)
    return LdapSettings(**values)


def can_bind(server: Slapd, login: str, password: str) -> bool:
    connection = Connection(
        Server(server.host, port=server.port), user=server.dn(login), password=password
    )
    try:
        return connection.bind()
    finally:
        connection.unbind()


async def test_new_password_replaces_the_old_one(slapd: Slapd) -> None:
    await set_ldap_password(settings_for(slapd), "student1", NEW_PASSWORD)

    assert can_bind(slapd, "student1", NEW_PASSWORD)
    assert not can_bind(slapd, "student1", slapd.passwords["student1"])
    assert can_bind(slapd, "student2", slapd.passwords["student2"])  # neighbours untouched


async def test_caller_chooses_the_login_prefix(slapd: Slapd) -> None:
    await set_ldap_password(settings_for(slapd), "sec-student1", NEW_PASSWORD)

    assert can_bind(slapd, "sec-student1", NEW_PASSWORD)
    assert can_bind(slapd, "student1", slapd.passwords["student1"])


async def test_password_never_reaches_the_logs(slapd: Slapd) -> None:
    settings = settings_for(slapd)
    with capture_logs() as logs:
        await set_ldap_password(settings, "student1", NEW_PASSWORD)

    assert logs, "setting a password should leave a trace"
    assert NEW_PASSWORD not in repr(logs)
    assert slapd.bind_password not in repr(logs) + repr(settings)


async def test_unknown_student_is_refused_naming_the_entry(slapd: Slapd) -> None:
    with pytest.raises(PeerRefused) as caught:
        await set_ldap_password(settings_for(slapd), "student99", NEW_PASSWORD)

    assert not isinstance(caught.value, PeerMisconfigured | TransientError)
    assert slapd.dn("student99") in str(caught.value)


async def test_wrong_bind_password_is_a_configuration_error(slapd: Slapd) -> None:
    settings = settings_for(slapd, password="not-the-manager-password")

    with pytest.raises(PeerMisconfigured, match="Directory Manager"):
        await set_ldap_password(settings, "student1", NEW_PASSWORD)
    assert can_bind(slapd, "student1", slapd.passwords["student1"])


async def test_server_down_is_worth_a_retry() -> None:
    settings = LdapSettings(
        server="127.0.0.1", port=free_port(), base_dn="dc=example,dc=org", password="x", timeout=2
    )

    with pytest.raises(PeerUnavailable, match="ldap: 127.0.0.1:"):
        await set_ldap_password(settings, "student1", NEW_PASSWORD)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_server_that_never_answers_times_out_as_unavailable(silent_server: int) -> None:
    settings = LdapSettings(
        server="127.0.0.1",
        port=silent_server,
        base_dn="dc=example,dc=org",
        password="x",
        timeout=0.5,
    )

    with pytest.raises(PeerUnavailable):
        await set_ldap_password(settings, "student1", NEW_PASSWORD)


@pytest.mark.parametrize(("login", "password"), [("", NEW_PASSWORD), ("student1", "")])
async def test_empty_login_or_password_is_refused_before_any_connection(
    login: str, password: str
) -> None:
    settings = LdapSettings(server="127.0.0.1", port=free_port(), base_dn="dc=x", password="x")

    with pytest.raises(AccountError, match="empty"):
        await set_ldap_password(settings, login, password)


def test_settings_reject_a_bad_port() -> None:
    with pytest.raises(ValueError, match="port"):
        LdapSettings(server="ldap", port=0, base_dn="dc=x", password="x")
