"""HubClient against a real JupyterHub (the PyPI package, in its own process on loopback).

The hub is started once for the module (about 2 s) with a spawner whose start and stop the
test can hold (see real_hub.py): slow spawns and stops are made as slow as each test needs
without timing windows. The hub's `slow_spawn_timeout`/`slow_stop_timeout` (after which it
answers 202; 10 s by default) are set to SLOW seconds here to keep the suite fast; what the
default of 10 s means for wodmail's own timeout is checked against the installed hub below.
The proxy is replaced by an in-memory route table: wodmail calls the hub's API directly,
routing is not under test (real_hub.py says more). Each test uses its own student.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

pytest.importorskip(
    "jupyterhub", reason="jupyterhub is not installed (it comes with the `test` extra)"
)

from support.e2e import Backend2E  # noqa: E402
from support.real_hub import RealHub, start_hub  # noqa: E402  (needs jupyterhub)
from wodmail.config import Hub  # noqa: E402
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, make_sandbox  # noqa: E402
from wodmail.errors import PeerMisconfigured, PeerRefused, PeerUnavailable  # noqa: E402
from wodmail.journal.jobs import JobState  # noqa: E402
from wodmail.peers.hub import HubClient  # noqa: E402

SLOW = 2.0
WAIT = 60.0  # how long a test waits for something the hub will surely do (a loaded machine)


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHub]:
    users = [f"student{n}" for n in range(1, 21)]
    hub = start_hub(tmp_path_factory.mktemp("jupyterhub"), users=users, slow_seconds=SLOW)
    yield hub
    hub.stop()


def client(hub: RealHub, token: str | None = None, **kwargs: float) -> HubClient:
    kwargs.setdefault("poll_seconds", 0.1)
    return HubClient(hub.url, token or hub.tokens["wodmail"], **kwargs)


def calls(entries: list[dict[str, Any]], method: str | None = None) -> list[tuple[str, Any]]:
    """(method, status) of each hub call logged (status None: no answer in time)."""
    return [
        (e["method"], e["status"])
        for e in entries
        if e["event"] == "hub call" and method in (None, e["method"])
    ]


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {WAIT:g} s: {what}")
        await asyncio.sleep(0.05)


async def test_start_and_already_running(real_hub: RealHub) -> None:
    async with client(real_hub) as hub:
        assert await hub.start_server("student1") == "started"
        assert await hub.start_server("student1") == "already running"
        assert (await hub.get_user("student1"))["servers"][""]["ready"] is True

    assert real_hub.events("student1") == ["start", "started"]


async def test_stop_and_stop_of_a_stopped_server(real_hub: RealHub) -> None:
    async with client(real_hub) as hub:
        await hub.start_server("student2")
        assert await hub.stop_server("student2") == "stopped"
        with capture_logs() as entries:
            assert await hub.stop_server("student2") == "not running"

    assert real_hub.events("student2") == ["start", "started", "stop", "stopped"]
    assert calls(entries, "DELETE") == []
    # What the hub itself says to that DELETE: 204, as for a real stop.
    assert real_hub.api("DELETE", "users/student2/server")[0] == 204


async def test_stop_of_a_server_that_never_ran(real_hub: RealHub) -> None:
    async with client(real_hub) as hub:
        assert await hub.stop_server("student3") == "not running"

    assert real_hub.events("student3") == []


async def test_a_slow_spawn_is_followed_until_ready(real_hub: RealHub) -> None:
    real_hub.hold("start", "student4")
    with capture_logs() as entries:
        async with client(real_hub) as hub:
            start = asyncio.create_task(hub.start_server("student4", within=WAIT))
            await until(lambda: ("POST", 202) in calls(entries), "the hub's 202 to the start")
            assert not start.done()  # 202 is not taken as started
            real_hub.release("start", "student4")
            assert await start == "started"
            assert (await hub.get_user("student4"))["servers"][""]["ready"] is True

    assert calls(entries, "POST") == [("POST", 202)]
    assert real_hub.events("student4") == ["start", "started"]


async def test_a_spawn_slower_than_our_timeout_is_followed_not_retried(
    real_hub: RealHub,
) -> None:
    # Our timeout (0.5 s) below the hub's slow_spawn_timeout (SLOW): the POST gets no answer
    # in time, but the hub has it; the user model shows the pending spawn, which is followed.
    real_hub.hold("start", "student5")
    with capture_logs() as entries:
        async with client(real_hub, timeout=0.5) as hub:
            start = asyncio.create_task(hub.start_server("student5", within=WAIT))
            await until(lambda: ("GET", 200) in calls(entries), "a look at the user model")
            real_hub.release("start", "student5")
            assert await start == "started"

    assert calls(entries, "POST") == [("POST", None)]
    assert real_hub.events("student5") == ["start", "started"]


async def test_a_spawn_that_fails_while_pending_says_why(real_hub: RealHub) -> None:
    real_hub.hold("start", "student6")
    real_hub.fail_starts("student6")
    with capture_logs() as entries:
        async with client(real_hub) as hub:
            start = asyncio.create_task(hub.start_server("student6", within=WAIT))
            await until(lambda: ("POST", 202) in calls(entries), "the hub's 202 to the start")
            real_hub.release("start", "student6")
            with pytest.raises(PeerUnavailable, match="student6's server failed to start"
                               ) as caught:
                await start

    assert "Spawn failed: the test made student6's spawn fail" in str(caught.value)


async def test_a_spawn_that_fails_at_once_says_why(real_hub: RealHub) -> None:
    real_hub.fail_starts("student7")
    async with client(real_hub) as hub:
        with pytest.raises(PeerUnavailable, match=r"failed \(500") as caught:
            await hub.start_server("student7")

    assert "the test made student7's spawn fail" in str(caught.value)


async def test_a_slow_stop_is_followed_until_gone(real_hub: RealHub) -> None:
    with capture_logs() as entries:
        async with client(real_hub) as hub:
            await hub.start_server("student8")
            real_hub.hold("stop", "student8")
            stop = asyncio.create_task(hub.stop_server("student8", within=WAIT))
            await until(lambda: ("DELETE", 202) in calls(entries), "the hub's 202 to the stop")
            assert not stop.done()
            real_hub.release("stop", "student8")
            assert await stop == "stopped"
            assert (await hub.get_user("student8"))["servers"] == {}


async def test_pending_stop_then_start(real_hub: RealHub) -> None:
    async with client(real_hub) as hub:
        await hub.start_server("student9")
        real_hub.hold("stop", "student9")
        # Someone else (the hub's admin page, an idle culler) stops it, slowly.
        assert real_hub.api("DELETE", "users/student9/server")[0] == 202
        with capture_logs() as entries:
            start = asyncio.create_task(hub.start_server("student9", within=WAIT))
            await until(lambda: ("POST", 400) in calls(entries), "the hub's 'pending stop'")
            real_hub.release("stop", "student9")
            assert await start == "started"

    assert calls(entries, "POST") == [("POST", 400), ("POST", 201)]
    assert real_hub.events("student9") == ["start", "started", "stop", "stopped", "start",
                                           "started"]


async def test_a_user_the_hub_does_not_have(real_hub: RealHub) -> None:
    async with client(real_hub) as hub:
        with pytest.raises(PeerRefused, match="JupyterHub: no user 'student99'") as caught:
            await hub.start_server("student99")
        with pytest.raises(PeerRefused, match="no user 'student99'"):
            await hub.preflight("student99")
        assert await hub.stop_server("student99") == "no such hub user"
        await hub.preflight("student10")

    assert "\n" not in str(caught.value) and caught.value.status == 404


async def test_an_unknown_token(real_hub: RealHub) -> None:
    async with client(real_hub, token="not-a-token-of-this-hub") as hub:
        with pytest.raises(PeerMisconfigured, match="does not accept wodmail's token") as start:
            await hub.start_server("student11")
        with pytest.raises(PeerMisconfigured, match="does not accept wodmail's token"):
            await hub.preflight("student11")
        with pytest.raises(PeerMisconfigured, match="does not accept wodmail's token"):
            await hub.stop_server("student11")

    assert "Missing or invalid credentials" in str(start.value)
    assert "scope" not in str(start.value)
    assert real_hub.events("student11") == []


async def test_a_token_missing_a_scope(real_hub: RealHub) -> None:
    async with client(real_hub) as hub:
        await hub.start_server("student12")
    async with client(real_hub, token=real_hub.tokens["reader"]) as reader:
        with pytest.raises(PeerMisconfigured, match="may not start servers") as preflight:
            await reader.preflight("student13")
        with pytest.raises(PeerMisconfigured, match="may not start servers") as start:
            await reader.start_server("student13")
        with pytest.raises(PeerMisconfigured, match="may not stop servers") as stop:
            await reader.stop_server("student12")

    assert "start:servers" in str(preflight.value)
    assert "needs any of the scopes [start:servers]" in str(start.value)
    assert "needs any of the scopes [delete:servers]" in str(stop.value)
    assert real_hub.events("student13") == []
    assert real_hub.events("student12") == ["start", "started"]


async def test_orders_with_the_real_hub(real_hub: RealHub, tmp_path: Path) -> None:
    # The daemon with its real lifecycle on a sandbox (stand-in portal), the hub real.
    # student21 is one the sandbox has but the hub does not.
    box = make_sandbox(tmp_path / "sandbox", students=range(14, 22), base_id=100)
    hub = {"url": real_hub.url, "token": real_hub.tokens["wodmail"]}
    wod = await Backend2E(box, box.config(hub=hub)).start()
    try:
        created = await wod.order("CREATE 14 14", SAMPLE_WORKSHOP)
        cleaned = await wod.order("CLEANUP 14 14", SAMPLE_WORKSHOP)
        never = await wod.order("CLEANUP 15 15", SAMPLE_WORKSHOP)  # never started
        refused = await wod.order("CREATE 21 21", SAMPLE_WORKSHOP)
    finally:
        await wod.stop()
        box.close()

    assert created.state is JobState.DONE, created.reason
    assert created.result["hub"] == "started" and not created.result.get("warnings")
    assert cleaned.state is JobState.DONE, cleaned.reason
    assert cleaned.result["hub"] == "stopped"
    assert real_hub.events("student14") == ["start", "started", "stop", "stopped"]
    assert never.state is JobState.DONE, never.reason
    assert never.result["hub"] == "not running"
    assert refused.state is JobState.FAILED
    assert refused.reason.startswith("hub check student21: JupyterHub: no user 'student21'")
    steps = [step["name"] for step in refused.result["steps"]]
    assert "set-password student21" not in steps and "wipe-home student21" not in steps


async def test_a_spawn_slower_than_the_hubs_default_10_s(tmp_path: Path) -> None:
    # The one test with the hub's own slow_spawn_timeout (10 s): with wodmail's default
    # timeout the start is one POST, answered 202 after those 10 s, then followed.
    hub_process = start_hub(tmp_path / "jupyterhub", users=["student1"], slow_seconds=None)
    try:
        hub_process.hold("start", "student1")
        with capture_logs() as entries:
            async with HubClient(hub_process.url, hub_process.tokens["wodmail"],
                                 poll_seconds=0.1) as hub:
                start = asyncio.create_task(hub.start_server("student1", within=WAIT))
                await until(lambda: ("POST", 202) in calls(entries), "the hub's 202")
                hub_process.release("start", "student1")
                assert await start == "started"
        assert hub_process.events("student1") == ["start", "started"]
    finally:
        hub_process.stop()

    [post] = [e for e in entries if e["event"] == "hub call" and e["method"] == "POST"]
    assert post["status"] == 202 and post["duration_ms"] >= 10_000


def test_our_default_timeout_outlasts_the_hubs_slow_timeouts() -> None:
    from jupyterhub.handlers.base import BaseHandler

    # The installed hub's own defaults, read from the properties its handlers use.
    unset = SimpleNamespace(settings={})
    slowest = max(
        BaseHandler.slow_spawn_timeout.fget(unset),  # type: ignore[attr-defined]
        BaseHandler.slow_stop_timeout.fget(unset),  # type: ignore[attr-defined]
    )
    assert Hub().timeout_seconds > slowest
