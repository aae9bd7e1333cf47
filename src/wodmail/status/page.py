"""The status page at `/`: the orders of the last hours per student, as plain HTML.

No script and no external asset: a meta refresh reloads it every few seconds. It shows what
`/jobs` shows (`public`): no hook output, e-mail addresses masked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2

from wodmail.journal.jobs import Job, JobState
from wodmail.metrics import PeerResult
from wodmail.status.public import public_job

REFRESH_SECONDS = 5
_REFUSED_ROWS = 50


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("wodmail", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("status.html.j2")


def render_page(
    jobs: list[Job],
    *,
    hours: float,
    now: float,
    peers: Mapping[str, PeerResult] | None = None,
) -> str:
    """The page; `peers`: each peer's last call, as /healthz reports it."""
    orders = [job for job in jobs if job.state is not JobState.REJECTED]
    refused = [job for job in jobs if job.state is JobState.REJECTED][:_REFUSED_ROWS]
    by_student: dict[str, list[dict[str, Any]]] = {}
    for job in sorted(orders, key=_student_order):
        by_student.setdefault(_student_text(job), []).append(_row(job))
    counts = Counter(job.state.value for job in jobs)
    return _template().render(
        hours_text=f"{hours:g} h",
        refresh=REFRESH_SECONDS,
        now=_clock(now),
        counts=[(state.value, counts[state.value]) for state in JobState if counts[state.value]],
        students=list(by_student.items()),
        refused=[_row(job) for job in refused],
        peers=[(name, (result.ok, _clock(result.at), result.detail))
               for name, result in sorted((peers or {}).items())],
    )


def _student_order(job: Job) -> tuple[int, int, float]:
    # Students in order, orders for no known student last; newest first within a student.
    unknown = job.student is None
    return (int(unknown), job.student or 0, -job.received_at)


def _student_text(job: Job) -> str:
    if job.student is None:
        return f"customer {job.customer}" if job.customer is not None else "?"
    if job.student_max is not None:
        return f"{job.student}-{job.student_max}"
    return str(job.student)


def _row(job: Job) -> dict[str, Any]:
    public = public_job(job)
    return {
        "id": job.id,
        "verb": job.verb,
        "workshop": job.workshop,
        "state": job.state.value,
        "attempts": job.attempts,
        "step": _step_text(public.get("current_step") or {}),
        "reason": public["reason"],
        "received": _clock(job.received_at),
        "finished": _clock(job.finished_at) if job.finished_at else "",
        "sender": public["sender"] or public["envelope_from"] or "",
        "peer": job.peer or "",
        "subject": public["subject"] or "",
    }


def _step_text(step: dict[str, Any]) -> str:
    if not step.get("name"):
        return ""
    text = str(step["name"])
    if step.get("try", 1) > 1:
        text += f" (try {step['try']})"
    if step.get("last_error"):
        text += f": {step['last_error']}"
    return text


def _clock(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
