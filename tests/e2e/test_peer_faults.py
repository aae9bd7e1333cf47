"""Peers failing the way a data centre does, seen from an order: the portal answering 5xx,
hanging past the client's timeout, cutting its answers short; the hub down for longer than
the retry deadline after the participant was told `active`.

What is asserted is what a participant or an admin notices: the order's outcome and reason,
the portal's record, and that `active` reached the portal exactly once. Client-level cases
(connection refused, 401 and re-login, tokens dead on arrival, 403 scopes) are in
tests/peers/test_portal.py and tests/peers/test_hub.py; tokens expiring mid-order and the
portal down for a while in tests/e2e/test_lifecycle_e2e.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import pytest

from support.e2e import portal_writes
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox
from wodmail.dev.standins._base import StandinRequest, StandinResponse
from wodmail.journal.jobs import JobState

WS = SAMPLE_WORKSHOP
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chpasswd -R and chown need root")


def actives(sandbox: Sandbox, customer: int) -> int:
    return portal_writes(sandbox).count(("PUT", f"/api/customer/{customer}", {"active": True}))


def retried(job: Any) -> list[str]:
    return [step["name"] for step in job.result["steps"] if step.get("attempts", 1) > 1]


@needs_root
async def test_portal_5xx_for_a_while(sandbox, backend):
    wod = await backend()
    sandbox.portal.fail_next(4, status=502)
    job = await wod.order("CREATE 1 1", WS)
    assert job.state is JobState.DONE, job.reason
    assert retried(job)
    assert actives(sandbox, 1) == 1


@needs_root
async def test_portal_hanging_past_the_client_timeout_for_a_while(sandbox, backend):
    wod = await backend(portal={"timeout_seconds": 0.5})
    sandbox.portal.set_delay(2.0)  # every answer comes after the client gave up
    asyncio.get_running_loop().call_later(2.5, sandbox.portal.set_delay, 0)
    job = await wod.order("CREATE 2 2", WS, limit=60)
    assert job.state is JobState.DONE, job.reason
    assert retried(job)
    assert sandbox.portal.customer(2)["active"] is True


@needs_root
async def test_portal_answers_cut_short_are_retried(sandbox, backend):
    wod = await backend()
    sandbox.portal.truncate_next(3)
    job = await wod.order("CREATE 3 3", WS)
    assert job.state is JobState.DONE, job.reason
    assert retried(job)
    assert sandbox.portal.customer(3)["active"] is True


@needs_root
async def test_active_cut_short_after_the_portal_took_it_is_not_sent_again(sandbox, backend):
    # The portal sets `active`, then its answer is cut: the retry must not tell the
    # participant twice (it reads the customer back first).
    portal = sandbox.portal
    route = portal._route
    cut: list[StandinRequest] = []

    def cutting(request: StandinRequest) -> StandinResponse:
        response = route(request)
        if request.method == "PUT" and b'"active"' in request.body and not cut:
            cut.append(request)
            return dataclasses.replace(response, truncated=True)
        return response

    portal._route = cutting  # type: ignore[method-assign]
    wod = await backend()
    job = await wod.order("CREATE 4 4", WS)
    assert job.state is JobState.DONE, job.reason
    assert cut, "the answer to `active` was never cut"
    assert actives(sandbox, 4) == 1
    assert "portal customer/4 active" in retried(job)


@needs_root
async def test_hub_down_past_the_deadline_after_active_leaves_the_order_done(sandbox, backend):
    # README "hub failure after active": the participant is told `active`; the order is done
    # with the hub's failure as a warning, not failed.
    portal, hub = sandbox.portal, sandbox.hub
    route = portal._route

    def hub_fails_on_active(request: StandinRequest) -> StandinResponse:
        if request.method == "PUT" and b'"active"' in request.body:
            hub.set_down(True)  # the hub goes down once the participant was told
        return route(request)

    portal._route = hub_fails_on_active  # type: ignore[method-assign]
    wod = await backend(dispatch={"retry_deadline_seconds": 1})
    job = await wod.order("CREATE 5 5", WS)
    sandbox.hub.set_down(False)
    assert job.state is JobState.DONE, job.reason
    assert sandbox.portal.customer(5)["active"] is True
    [warning] = job.result["warnings"]
    assert warning.startswith("hub start: ") and "gave up after" in warning
    assert "JupyterHub starts the server at login" in job.result["summary"]
