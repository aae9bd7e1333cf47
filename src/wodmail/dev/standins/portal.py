"""A stand-in for the portal's API-DB, honouring the API-DB's contract over real HTTP on loopback.

It keeps the unpleasant parts of the real service: tokens that expire `token_ttl` seconds
after login, 403/401 bodies that differ by cause, 400s whose body is plain text for a
missing record but `{"error": {}}` for a PUT on an unknown id, booleans accepted as the
strings "true"/"false". Seed it with `add_workshop`, `add_student`, `add_customer`.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
from typing import Any

from wodmail.dev.standins._base import (
    NO_JSON,
    RecordedCall,
    StandinRequest,
    StandinResponse,
    StandinServer,
)

ROLE_MODERATOR = "ROLE_MODERATOR"
ROLE_USER = "ROLE_USER"
WRITE_ROLES = frozenset({ROLE_MODERATOR, "ROLE_ADMIN"})

_BOOLEAN_FIELDS = {
    "workshop": frozenset(
        {"reset", "varpass", "ldap", "monoappliance", "multiappliance", "active", "beta"}
    ),
    "student": frozenset({"assigned"}),
    "customer": frozenset({"active", "cleaned"}),
}
_NOT_FOUND_TEXT = {
    "workshop": "Workshop Not Found",
    "student": "Student Not Found",
    "customer": "Customer Not Found",
}
_READ = re.compile(r"^/(workshops|students|customers)/([^/]+)$")
_WRITE = re.compile(r"^/(workshop|student|customer)/([^/]+)$")


class StandinPortal(StandinServer):
    """The API-DB on 127.0.0.1; `url` is the base URL (WODFEAPIURL), base path included."""

    MODERATOR_USER = "moderator"
    MODERATOR_PASSWORD = "moderator-secret-pw"
    PLAIN_USER = "visitor"
    PLAIN_PASSWORD = "visitor-secret-pw"

    def __init__(self, token_ttl: float = 180.0, base_path: str = "/api") -> None:
        super().__init__()
        if token_ttl <= 0:
            raise ValueError(f"token_ttl must be positive, got {token_ttl}")
        self.token_ttl = token_ttl
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self._users: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._issued: list[str] = []
        self._records: dict[str, dict[int, dict[str, Any]]] = {
            "workshop": {},
            "student": {},
            "customer": {},
        }
        self.add_user(self.MODERATOR_USER, self.MODERATOR_PASSWORD, roles=(ROLE_MODERATOR,))
        self.add_user(self.PLAIN_USER, self.PLAIN_PASSWORD, roles=(ROLE_USER,))

    @property
    def url(self) -> str:
        return self.root_url + self.base_path

    # seeding

    def add_user(
        self, username: str, password: str, *, roles: tuple[str, ...] = (ROLE_USER,)
    ) -> None:
        with self._lock:
            self._users[username] = {
                "id": len(self._users) + 1,
                "username": username,
                "email": f"{username}@standin.invalid",
                "password": password,
                "roles": list(roles),
            }

    def add_workshop(self, **fields: Any) -> dict[str, Any]:
        """Add a workshop (id assigned if absent); unspecified fields get plausible defaults."""
        with self._lock:
            table = self._records["workshop"]
            workshop_id = int(fields.pop("id", max(table, default=0) + 1))
            notebook = fields.get("notebook", f"WKSHP-Standin{workshop_id}")
            record = {
                "id": workshop_id,
                "name": f"Stand-in workshop {notebook}",
                "notebook": notebook,
                "capacity": 20,
                "range": [1, 20],
                "reset": False,
                "varpass": False,
                "ldap": False,
                "monoappliance": False,
                "multiappliance": False,
                "active": True,
                "beta": False,
                "compile": None,
                "duration": 4,
                "location": "standin",
            }
            record.update(fields)
            table[workshop_id] = record
            return copy.deepcopy(record)

    def replace_workshop(self, record: dict[str, Any]) -> None:
        """Store `record` exactly as given (no defaults): replays of the real API-DB's JSON."""
        with self._lock:
            self._records["workshop"][int(record["id"])] = copy.deepcopy(record)

    def add_student(self, id: int, **fields: Any) -> dict[str, Any]:
        record = {
            "id": id,
            "url": f"http://127.0.0.1:8000/user/student{id}/lab",
            "username": f"student{id}",
            "password": "",
            "assigned": False,
            "location": "standin",
        }
        return self._store("student", id, record, fields)

    def add_customer(self, id: int, **fields: Any) -> dict[str, Any]:
        record = {
            "id": id,
            "name": f"Participant {id}",
            "email": f"participant{id}@standin.invalid",
            "company": "Stand-in Inc.",
            "sessionName": "",
            "location": "standin",
            "active": False,
            "cleaned": False,
            "lastEmailSent": "welcome",
            "notebook": "",
            "studentId": None,
            "completionPercentage": 0,
            "startDate": None,
            "endDate": None,
        }
        return self._store("customer", id, record, fields)

    def _store(
        self, kind: str, record_id: int, record: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        record.update(fields)
        with self._lock:
            self._records[kind][record_id] = record
            return copy.deepcopy(record)

    # reading state back (copies)

    def workshops(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._records["workshop"].values()))

    def workshop(self, id: int) -> dict[str, Any] | None:
        return self._copy_of("workshop", id)

    def student(self, id: int) -> dict[str, Any] | None:
        return self._copy_of("student", id)

    def customer(self, id: int) -> dict[str, Any] | None:
        return self._copy_of("customer", id)

    def _copy_of(self, kind: str, record_id: int) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._records[kind].get(record_id))

    def writes(self) -> list[RecordedCall]:
        """The PUT calls seen so far (the callbacks wodmail makes), in order."""
        return [call for call in self.calls if call.method == "PUT"]

    def logins(self) -> list[RecordedCall]:
        return [call for call in self.calls if call.path == self.base_path + "/login"]

    def issued_tokens(self) -> list[str]:
        """Every token handed out so far (for tests that check tokens never reach the logs)."""
        with self._lock:
            return list(self._issued)

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far, as if they all expired right now."""
        with self._lock:
            self._tokens.clear()

    # HTTP

    def _recordable_body(self, request: StandinRequest) -> Any:
        body = super()._recordable_body(request)
        if isinstance(body, dict) and "password" in body and request.path.endswith("/login"):
            body = {**body, "password": "***"}
        return body

    def _route(self, request: StandinRequest) -> StandinResponse:
        path = request.path.split("?", 1)[0]
        if not path.startswith(self.base_path + "/"):
            return _express_404(request.method, path)
        path = path[len(self.base_path) :]
        if request.method == "POST" and path == "/login":
            return self._login(request.json())
        if request.method == "GET" and path == "/workshops":
            return StandinResponse.of_json(200, list(self._records["workshop"].values()))
        if request.method == "GET" and (match := _READ.match(path)):
            return self._read(request, match.group(1).removesuffix("s"), match.group(2))
        if request.method == "PUT" and (match := _WRITE.match(path)):
            return self._write(request, match.group(1), match.group(2))
        return _express_404(request.method, self.base_path + path)

    def _login(self, body: Any) -> StandinResponse:
        credentials = body if isinstance(body, dict) else {}
        user = self._users.get(str(credentials.get("username")))
        if user is None:
            return StandinResponse.of_json(404, {"message": "User Not found."})
        if credentials.get("password") != user["password"]:
            return StandinResponse.of_json(
                401, {"accessToken": None, "message": "Invalid Password!"}
            )
        token = _new_token()
        self._tokens[token] = (user["username"], time.monotonic() + self.token_ttl)
        self._issued.append(token)
        return StandinResponse.of_json(
            200,
            {
                "id": user["id"],
                "username": user["username"],
                "email": user["email"],
                "roles": list(user["roles"]),
                "accessToken": token,
            },
        )

    def _authenticate(self, request: StandinRequest) -> dict[str, Any] | StandinResponse:
        token = request.headers.get("x-access-token")
        if not token:
            return StandinResponse.of_json(403, {"message": "No token provided!"})
        owner, expires_at = self._tokens.get(token, ("", 0.0))
        if not owner or time.monotonic() >= expires_at:
            return StandinResponse.of_json(401, {"message": "Unauthorized!"})
        return self._users[owner]

    def _read(self, request: StandinRequest, kind: str, raw_id: str) -> StandinResponse:
        if kind != "workshop":
            user = self._authenticate(request)
            if isinstance(user, StandinResponse):
                return user
        record = self._records[kind].get(_as_int(raw_id))
        if record is None:
            return StandinResponse.of_text(400, _NOT_FOUND_TEXT[kind])
        return StandinResponse.of_json(200, record)

    def _write(self, request: StandinRequest, kind: str, raw_id: str) -> StandinResponse:
        user = self._authenticate(request)
        if isinstance(user, StandinResponse):
            return user
        if not WRITE_ROLES.intersection(user["roles"]):
            return StandinResponse.of_json(403, {"message": "Require Moderator or Admin Role!"})
        changes = request.json()
        if changes is NO_JSON or not isinstance(changes, dict):
            return StandinResponse.of_text(400, "Bad Request")
        record = self._records[kind].get(_as_int(raw_id))
        if record is None:
            return StandinResponse.of_json(400, {"error": {}})
        for name, value in changes.items():
            if name != "id":
                record[name] = _lenient(kind, name, value)
        return StandinResponse.of_json(200, record)


def seed_example(
    portal: StandinPortal, *, notebook: str = "WKSHP-API101", students: int = 20, base_id: int = 0
) -> dict[str, Any]:
    """Seed one workshop, its students 1..`students` (API-DB ids + `base_id`) and a customer
    per student (customer id = student number). Returns the workshop record."""
    workshop = portal.add_workshop(notebook=notebook, capacity=students, range=[1, students])
    for number in range(1, students + 1):
        portal.add_student(number + base_id, username=f"student{number}")
        portal.add_customer(number, notebook=notebook, studentId=number + base_id)
    return workshop


def _lenient(kind: str, name: str, value: Any) -> Any:
    """The API-DB takes booleans as JSON booleans or as the strings "true"/"false"."""
    if name in _BOOLEAN_FIELDS[kind] and value in ("true", "false"):
        return value == "true"
    return value


def _as_int(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        return None


def _new_token() -> str:
    """Opaque, JWT-shaped (three dot-separated parts), unique."""
    return "eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(24) + "." + secrets.token_urlsafe(16)


def _express_404(method: str, path: str) -> StandinResponse:
    """What the real service (Express) answers for a route it does not have."""
    html = f"<!DOCTYPE html><html><body><pre>Cannot {method} {path}</pre></body></html>"
    return StandinResponse(404, html.encode(), "text/html; charset=utf-8")
