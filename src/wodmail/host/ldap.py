"""Student passwords on the LDAP server, for workshops whose `ldap` flag is set.

The entry is `uid=<login>,ou=People,<base_dn>`; we bind as the directory manager and
replace `userPassword`. ldap3 is synchronous, so the work runs in a thread.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, NoReturn

import structlog
from ldap3 import MODIFY_REPLACE, NONE, Connection, Server
from ldap3.core.exceptions import (
    LDAPCommunicationError,
    LDAPException,
    LDAPInvalidDnError,
    LDAPResponseTimeoutError,
)
from ldap3.utils.dn import escape_rdn
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from wodmail.errors import AccountError, PeerMisconfigured, PeerRefused, PeerUnavailable

log = structlog.get_logger(__name__)

PEER = "ldap"
# LDAP result codes (RFC 4511) that say something about our configuration...
_CONFIG_RESULTS = {48, 49, 50}  # inappropriateAuthentication, invalidCredentials, noAccess
# ...and those a later try may not meet.
_TRANSIENT_RESULTS = {3, 51, 52}  # timeLimitExceeded, busy, unavailable
_NO_SUCH_OBJECT = 32


class LdapSettings(BaseModel):
    """Where the LDAP server is and how wodmail binds to it (LDAPSRVNAME, LDAPPORT, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: str = Field(min_length=1, description="LDAPSRVNAME")
    port: int = Field(389, ge=1, le=65535, description="LDAPPORT")
    base_dn: str = Field(min_length=1, description="LDAPDMN, e.g. dc=example,dc=org")
    bind_dn: str = "cn=Directory Manager"
    password: SecretStr = Field(description="LDAPPWD")
    timeout: float = Field(10.0, gt=0, description="seconds for connecting and each answer")

    def people_dn(self, login: str) -> str:
        """The DN of a student's entry: `uid=<login>,ou=People,<base_dn>`."""
        return f"uid={escape_rdn(login)},ou=People,{self.base_dn}"


async def set_ldap_password(settings: LdapSettings, login: str, password: str) -> None:
    """Replace the `userPassword` of `login` (full login, e.g. `student7`) on LDAP."""
    if not login:
        raise AccountError("cannot set an LDAP password: empty login")
    if not password:
        raise AccountError(f"refusing to set an empty LDAP password for {login}")
    await asyncio.to_thread(_replace_password, settings, login, password)
    log.info("ldap password set", dn=settings.people_dn(login))


def _replace_password(settings: LdapSettings, login: str, password: str) -> None:
    where = f"{settings.server}:{settings.port}"
    bind_password = settings.password.get_secret_value()
    if not bind_password:
        raise PeerMisconfigured(PEER, f"no bind password configured for {settings.bind_dn}")
    server = Server(
        settings.server, port=settings.port, connect_timeout=settings.timeout, get_info=NONE
    )
    connection = Connection(
        server,
        user=settings.bind_dn,
        password=bind_password,
        # ldap3 packs this into SO_RCVTIMEO as whole seconds: a float would crash it.
        receive_timeout=math.ceil(settings.timeout),
        raise_exceptions=False,
    )
    dn = settings.people_dn(login)
    try:
        if not connection.bind():
            _raise_for_result(connection.result, f"bind as {settings.bind_dn} on {where}")
        changes = {"userPassword": [(MODIFY_REPLACE, [password])]}
        if not connection.modify(dn, changes):
            _raise_for_result(connection.result, f"replace userPassword of {dn} on {where}")
    except (LDAPCommunicationError, LDAPResponseTimeoutError) as exc:
        raise PeerUnavailable(PEER, f"{where}: {exc}") from exc
    except LDAPInvalidDnError as exc:
        raise PeerMisconfigured(PEER, f"invalid DN {dn!r}: {exc}") from exc
    finally:
        _close(connection)


def _raise_for_result(result: dict[str, Any], action: str) -> NoReturn:
    code = result.get("result")
    parts = (result.get("description"), result.get("message"))
    said = ", ".join(str(part) for part in parts if part)
    message = f"cannot {action}: {said or f'result {code}'}"
    if code in _CONFIG_RESULTS:
        raise PeerMisconfigured(PEER, message, status=code)
    if code in _TRANSIENT_RESULTS:
        raise PeerUnavailable(PEER, message, status=code)
    if code == _NO_SUCH_OBJECT:
        raise PeerRefused(PEER, f"{message} (no such entry)", status=code)
    raise PeerRefused(PEER, message, status=code)


def _close(connection: Connection) -> None:
    try:
        connection.unbind()
    except LDAPException:
        pass  # the connection is gone either way
