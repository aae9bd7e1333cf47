"""`/jobs`: its query (the filters of `wodmail jobs`, a page size, a cursor) and its paging.

A page holds `limit` orders (default 100, at most 1000), newest first; `before=<job id>`
starts below that id. When older orders match, the answer's `Link` header names the next
page (`</jobs?...&before=N>; rel="next"`, RFC 8288); the body stays the JSON array of
`wodmail jobs --json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from wodmail.journal.jobs import JobState
from wodmail.status.request import BadRequest

VERBS = ("CREATE", "CLEANUP", "RESET", "PURGE")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_KNOWN = frozenset({"state", "student", "workshop", "verb", "limit", "before"})


@dataclass(frozen=True)
class JobsQuery:
    filters: dict[str, Any]  # list_jobs keyword arguments: states, student, workshop, verb
    limit: int
    before: int | None


def jobs_query(query: dict[str, list[str]]) -> JobsQuery:
    """The query string of `/jobs`; BadRequest naming the parameter at fault."""
    unknown = sorted(set(query) - _KNOWN)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} (use {', '.join(sorted(_KNOWN))})")
    limit = _whole(query, "limit")
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {MAX_LIMIT}, got {limit} "
                         "(older orders: the next page, see the Link header)")
    before = _whole(query, "before")
    return JobsQuery(job_filters(query), limit or DEFAULT_LIMIT, before)


def job_filters(query: dict[str, list[str]]) -> dict[str, Any]:
    """`wodmail jobs` options from a query string: state (repeatable or comma-separated),
    student, workshop, verb."""
    filters: dict[str, Any] = {}
    states = [s for value in query.get("state", []) for s in value.split(",") if s]
    if states:
        try:
            filters["states"] = [JobState(state) for state in states]
        except ValueError:
            choices = ", ".join(state.value for state in JobState)
            raise BadRequest(f"state must be one of {choices}") from None
    student = _whole(query, "student")
    if student is not None:
        filters["student"] = student
    if "workshop" in query:
        filters["workshop"] = query["workshop"][-1]
    if "verb" in query:
        verb = query["verb"][-1].upper()
        if verb not in VERBS:
            raise BadRequest(f"verb must be one of {', '.join(VERBS)}")
        filters["verb"] = verb
    return filters


def next_link(query: dict[str, list[str]], last_id: int) -> str:
    """The `Link` header value of the page after the one ending with job `last_id`."""
    kept = [(key, value) for key, values in query.items() if key != "before" for value in values]
    return f'</jobs?{urlencode([*kept, ("before", str(last_id))])}>; rel="next"'


def _whole(query: dict[str, list[str]], name: str) -> int | None:
    if name not in query:
        return None
    value = query[name][-1]
    if not value.isdigit() or not value.isascii() or len(value) > 18:
        raise BadRequest(f"{name} must be a whole number, got {value[:40]!r}")
    return int(value)
