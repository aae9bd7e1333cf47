"""Client for the portal's REST service (the API-DB): workshops, students, customers.

One `httpx.AsyncClient` per `PortalClient`. The moderator token lives 180 s on the portal
side: it is renewed before it gets old, and on any 401 the client logs in again (once,
shared by all concurrent callers) and retries the call once. Errors follow
`wodmail.errors`: unreachable/5xx/timeouts are `PeerUnavailable` (retried by the
dispatcher), a 4xx is `PeerRefused`, bad credentials or a missing role `PeerMisconfigured`.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from wodmail.errors import PeerMisconfigured, PeerRefused, PeerUnavailable
from wodmail.peers._http import ClientBase, describe_body, send

log = structlog.get_logger(__name__)

PEER = "API-DB"
WRITE_ROLES = frozenset({"ROLE_MODERATOR", "ROLE_ADMIN"})
MAX_RENEWAL_MARGIN = 30.0
"""Renew the token this long (at most a fifth of its life) before the portal expires it."""


FLAG_FIELDS = ("reset", "varpass", "ldap", "monoappliance", "multiappliance", "active", "beta")
NOT_SCRIPT_NAMES = frozenset({"", "true", "false", "null", "none"})
"""`compile` values that name no script (compared lower-cased), whatever their type."""


def flag(value: Any) -> bool:
    """A flag as the procmail API's `[ _"$x" = _"true" ]` read `jq -r` output: only a JSON
    true or the exact string "true" is true; "True", "", null, "yes", 1 ... are false."""
    return value is True or value == "true"


def script_names(value: Any) -> tuple[str, ...]:
    """`compile` as script names: a comma-separated string other than a boolean or null word
    (the API-DB stores it as VARCHAR, so `false` arrives as "false"), or a list of names."""
    if isinstance(value, str):
        if value.strip().lower() in NOT_SCRIPT_NAMES:
            return ()
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, list | tuple):
        return tuple(str(name).strip() for name in value
                     if str(name).strip().lower() not in NOT_SCRIPT_NAMES)
    return ()  # null, booleans, numbers: no script name, as `jq -r` + `-f` made of them


def student_range(value: Any) -> tuple[int, int] | None:
    """`range` as [min, max]; also the shapes people type: "1-6", ["1981-1985"], ["1", "6"].
    None when missing or empty; ValueError with a one-line reason for anything else."""
    if value in (None, "", [], ()):
        return None
    items = value if isinstance(value, list | tuple) else [value]
    if len(items) == 1 and isinstance(items[0], str | int):
        items = str(items[0]).replace(",", "-").split("-")
    try:
        low, high = (int(str(item).strip()) for item in items)
    except ValueError:
        raise ValueError(f"range {value!r} is not [min, max]") from None
    return low, high


class PortalWorkshop(BaseModel):
    """A workshop record as the API-DB returns it, read tolerantly (extra fields ignored).

    The API-DB's flags come as booleans, "true"/"false" strings (VARCHAR columns) or null;
    they mean what the procmail API's `= "true"` tests made of them (`flag`). `compile` is
    kept as a tuple of script names (`script_names`). An unusable `range` is kept as
    `range_error` and only fails an order that needs the range (`Workshop.range_min`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int
    notebook: str
    name: str = ""
    capacity: int = 0
    range: tuple[int, int] | None = None
    range_error: str | None = None
    reset: bool = False
    varpass: bool = False
    ldap: bool = False
    monoappliance: bool = False
    multiappliance: bool = False
    active: bool = False
    beta: bool = False
    compile: tuple[str, ...] = ()
    duration: float | None = None
    location: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _tolerant_range(cls, data: Any) -> Any:
        if isinstance(data, dict) and "range" in data:
            data = dict(data)
            try:
                data["range"] = student_range(data["range"])
            except ValueError as exc:
                data["range"], data["range_error"] = None, str(exc)
        return data

    @field_validator(*FLAG_FIELDS, mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        return flag(value)

    @field_validator("name", mode="before")
    @classmethod
    def _null_name(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("capacity", mode="before")
    @classmethod
    def _null_capacity(cls, value: Any) -> Any:
        return 0 if value is None or value == "" else value

    @field_validator("compile", mode="before")
    @classmethod
    def _script_names(cls, value: Any) -> tuple[str, ...]:
        return script_names(value)


class PortalClient(ClientBase):
    """The API-DB at `base_url` (WODFEAPIURL), used as the moderator account `user`."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        *,
        timeout: float = 10.0,
        token_ttl: float = 180.0,
        workshops_cache_seconds: float = 30.0,
    ) -> None:
        super().__init__(
            "portal", base_url, credential=user, credential_name="user", secret=password,
            timeout=timeout, positive={"token_ttl": token_ttl},
        )
        self._user = user
        self._password = password
        self._token: str | None = None
        self._token_issued_at = 0.0
        self._renew_after = token_ttl - min(MAX_RENEWAL_MARGIN, token_ttl / 5)
        self._login_lock = asyncio.Lock()
        self._workshops: list[dict[str, Any]] | None = None
        self._workshops_fetched_at = 0.0
        self._workshops_cache_seconds = workshops_cache_seconds
        self._workshops_lock = asyncio.Lock()

    # workshops

    async def list_workshops(self) -> list[dict[str, Any]]:
        """Every workshop record; answered from a cache younger than `workshops_cache_seconds`."""
        async with self._workshops_lock:
            age = time.monotonic() - self._workshops_fetched_at
            if self._workshops is None or age >= self._workshops_cache_seconds:
                payload = await self._call("GET", "/workshops", subject="the workshop list")
                if not isinstance(payload, list):
                    raise PeerRefused(
                        PEER, f"GET /workshops answered {type(payload).__name__}, not a list"
                    )
                self._workshops = [record for record in payload if isinstance(record, dict)]
                self._workshops_fetched_at = time.monotonic()
            return copy.deepcopy(self._workshops)

    async def find_workshop(
        self, notebook: str, fallback: str | None = None
    ) -> dict[str, Any] | None:
        """The workshop whose `notebook` is `notebook`, else `fallback` (WS for a CHLG-x)."""
        workshops = await self.list_workshops()
        for wanted in (notebook, fallback):
            for record in workshops:
                if wanted and record.get("notebook") == wanted:
                    return record
        return None

    async def get_workshop(self, workshop_id: int) -> dict[str, Any]:
        path = f"/workshops/{_checked_id(workshop_id)}"
        return _record(await self._call("GET", path, subject=f"workshop {workshop_id}"), path)

    async def update_workshop(self, workshop_id: int, **fields: Any) -> dict[str, Any]:
        self._workshops = None
        return await self._update("workshop", workshop_id, fields)

    # students and customers

    async def get_student(self, student_id: int) -> dict[str, Any]:
        path = f"/students/{_checked_id(student_id)}"
        payload = await self._call("GET", path, subject=f"student {student_id}", auth=True)
        return _record(payload, path)

    async def update_student(self, student_id: int, **fields: Any) -> dict[str, Any]:
        return await self._update("student", student_id, fields)

    async def get_customer(self, customer_id: int) -> dict[str, Any]:
        path = f"/customers/{_checked_id(customer_id)}"
        payload = await self._call("GET", path, subject=f"customer {customer_id}", auth=True)
        return _record(payload, path)

    async def update_customer(self, customer_id: int, **fields: Any) -> dict[str, Any]:
        return await self._update("customer", customer_id, fields)

    async def _update(self, kind: str, record_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        if not fields:
            raise ValueError(f"update_{kind} needs at least one field to change")
        path = f"/{kind}/{_checked_id(record_id)}"
        payload = await self._call(
            "PUT", path, subject=f"{kind} {record_id}", auth=True, body=fields
        )
        return payload if isinstance(payload, dict) else {}

    # HTTP and the token

    async def _call(
        self, method: str, path: str, *, subject: str, auth: bool = False, body: Any = None
    ) -> Any:
        if not auth:
            return self._payload(method, path, subject, await self._send(method, path, body))
        token = await self._fresh_token()
        response = await self._send(method, path, body, token)
        if response.status_code == 401:
            token = await self._fresh_token(stale=token)
            response = await self._send(method, path, body, token)
            if response.status_code == 401:
                raise PeerMisconfigured(
                    PEER,
                    f"{method} {path}: a token just issued to {self._user!r} was refused "
                    f"(401: {describe_body(response)})",
                    status=401,
                )
        return self._payload(method, path, subject, response)

    async def _send(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"x-access-token": token} if token else None
        return await send(
            self._http,
            peer=PEER,
            event="portal call",
            method=method,
            path=path,
            headers=headers,
            json_body=body,
        )

    async def access_token(self) -> str:
        """A valid moderator token, for legacy scripts that call the API-DB themselves."""
        return await self._fresh_token()

    async def _fresh_token(self, *, stale: str | None = None) -> str:
        """A token young enough to use; logs in when there is none, it is old, or is `stale`.

        The lock makes concurrent callers share one login instead of each making its own.
        """
        async with self._login_lock:
            age = time.monotonic() - self._token_issued_at
            if self._token is not None and self._token != stale and age < self._renew_after:
                return self._token
            self._token = None
            issued_at = time.monotonic()
            self._token = await self._login()
            self._token_issued_at = issued_at
            return self._token

    async def _login(self) -> str:
        credentials = {"username": self._user, "password": self._password}
        response = await self._send("POST", "/login", credentials)
        if response.status_code in (401, 403, 404):
            raise PeerMisconfigured(
                PEER,
                f"login as {self._user!r} refused ({response.status_code}: "
                f"{describe_body(response)})",
                status=response.status_code,
            )
        payload = self._payload("POST", "/login", "the login", response)
        token = payload.get("accessToken") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise PeerMisconfigured(
                PEER,
                f"login as {self._user!r} answered {response.status_code} without an "
                f"accessToken; is {self._base_url} the API-DB?",
                status=response.status_code,
            )
        roles = payload.get("roles")
        if isinstance(roles, list) and not WRITE_ROLES.intersection(roles):
            log.warning("portal account cannot write", user=self._user, roles=roles)
        return token

    def _payload(self, method: str, path: str, subject: str, response: httpx.Response) -> Any:
        """The parsed JSON of a 2xx answer (None if empty); any other answer is raised."""
        status = response.status_code
        if not 200 <= status < 300:
            raise self._error(method, path, subject, response)
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise PeerUnavailable(
                PEER,
                f"{method} {path} answered {status} with a body that is not JSON: "
                f"{describe_body(response)}",
                status=status,
            ) from None

    def _error(
        self, method: str, path: str, subject: str, response: httpx.Response
    ) -> PeerUnavailable | PeerRefused:
        status = response.status_code
        said = describe_body(response)
        where = f"{method} {path}"
        if status >= 500 or status in (408, 429):
            return PeerUnavailable(PEER, f"{where} failed ({status}: {said})", status=status)
        if status == 403 and "role" in said.lower():
            return PeerMisconfigured(
                PEER,
                f"{where} refused ({status}: {said}); the account {self._user!r} needs "
                "the moderator or admin role",
                status=status,
            )
        if status in (401, 403):
            return PeerMisconfigured(PEER, f"{where} refused ({status}: {said})", status=status)
        if status == 400 and _says_missing(response, said):
            return PeerRefused(
                PEER,
                f"{subject} does not exist in the API-DB ({where} answered 400: {said})",
                status=status,
            )
        if status == 404:
            return PeerRefused(
                PEER,
                f"{where} not found (404: {said}); is {self._base_url} the API-DB base URL?",
                status=status,
            )
        return PeerRefused(PEER, f"{where} refused ({status}: {said})", status=status)


def _says_missing(response: httpx.Response, said: str) -> bool:
    """The API-DB's two ways of saying "no such record": `{"error": {}}` or `X Not Found`."""
    try:
        payload = response.json()
    except ValueError:
        return said.lower().endswith("not found")
    return isinstance(payload, dict) and "error" in payload


def _checked_id(record_id: int) -> int:
    if isinstance(record_id, bool) or not isinstance(record_id, int) or record_id < 0:
        raise ValueError(f"an API-DB id is a non-negative integer, got {record_id!r}")
    return record_id


def _record(payload: Any, path: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise PeerRefused(PEER, f"GET {path} answered {type(payload).__name__}, not a record")
    return payload
