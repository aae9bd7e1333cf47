"""HubClient against the JupyterHub stand-in, over real HTTP on 127.0.0.1.

The stand-in answers as JupyterHub 6.1.1 does (test_hub_real.py runs the real hub for the
same cases); here are the cases the real hub cannot be made to show cheaply: a hub that is
down, 5xx, JupyterHub 1.x's 400 for a stop, a token without `read:servers`, a deadline.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from wodmail.config import Hub
from wodmail.dev.standins import StandinHub, StandinPortal
from wodmail.errors import PeerMisconfigured, PeerRefused, PeerUnavailable
from wodmail.peers.hub import HubClient

HUB_TOKEN = "hub-token-for-hub-tests-3b7e"


class Pauses:
    """A `pause` for the client that records what it was asked to wait, and returns at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def client_for(hub: StandinHub, token: str | None = None, **kwargs: float) -> HubClient:
    kwargs.setdefault("timeout", 5.0)
    return HubClient(hub.url, token or hub.token, **kwargs)


def writes(hub: StandinHub) -> list[tuple[str, str, int | None]]:
    return [(c.method, c.path, c.status) for c in hub.calls if c.method != "GET"]


async def test_start_then_start_again_is_fine(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        assert await hub.start_server("student3") == "started"
        assert await hub.start_server("student3") == "already running"

    assert hub_standin.is_running("student3")
    assert [c.status for c in hub_standin.calls] == [201, 400]
    assert hub_standin.calls[0].json == {}


async def test_stop_then_stop_again(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        await hub.start_server("student3")
        assert await hub.stop_server("student3") == "stopped"
        # The hub would answer 204 again: the user model says there is nothing to stop.
        assert await hub.stop_server("student3") == "not running"

    assert not hub_standin.is_running("student3")
    assert writes(hub_standin) == [
        ("POST", "/hub/api/users/student3/server", 201),
        ("DELETE", "/hub/api/users/student3/server", 204),
    ]


async def test_a_stop_answered_like_jupyterhub_1() -> None:
    with StandinHub(HUB_TOKEN, stop_not_running_status=400) as standin:
        async with client_for(standin) as hub:
            await hub.start_server("student3")
            assert await hub.stop_server("student3") == "stopped"
            assert await hub.stop_server("student3") == "not running"


async def test_get_user_shows_the_running_server(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        before = await hub.get_user("student3")
        await hub.start_server("student3")
        after = await hub.get_user("student3")

    assert before["servers"] == {}
    assert after["servers"][""]["ready"] is True


async def test_a_user_the_hub_does_not_know() -> None:
    with StandinHub(HUB_TOKEN, users=["student1"]) as standin:
        async with client_for(standin) as hub:
            with pytest.raises(PeerRefused, match="JupyterHub: no user 'student9'") as read:
                await hub.get_user("student9")
            with pytest.raises(PeerRefused, match="no user 'student9'") as start:
                await hub.start_server("student9")
            with pytest.raises(PeerRefused, match="no user 'student9'"):
                await hub.preflight("student9")
            assert await hub.stop_server("student9") == "no such hub user"
            await hub.preflight("student1")

    for caught in (read, start):
        assert "\n" not in str(caught.value) and caught.value.status == 404


async def test_a_wrong_token_is_named_as_such(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin, token="not-the-hub-token") as hub:
        with pytest.raises(PeerMisconfigured, match="does not accept wodmail's token") as caught:
            await hub.start_server("student3")
        with pytest.raises(PeerMisconfigured, match="does not accept wodmail's token"):
            await hub.preflight("student3")

    assert "scope" not in str(caught.value)
    assert "not-the-hub-token" not in str(caught.value)
    assert caught.value.status == 403
    assert not hub_standin.is_running("student3")


async def test_a_token_that_may_not_stop_names_the_scope(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        await hub.start_server("student3")
        hub_standin.set_scopes("read:servers")
        with pytest.raises(PeerMisconfigured, match="may not stop servers") as caught:
            await hub.stop_server("student3")

    assert "needs any of the scopes [delete:servers]" in str(caught.value)
    assert hub_standin.is_running("student3")


async def test_a_token_that_may_not_start_is_found_by_the_preflight(
    hub_standin: StandinHub,
) -> None:
    hub_standin.set_scopes("read:users", "read:servers")
    async with client_for(hub_standin) as hub:
        with pytest.raises(PeerMisconfigured, match="may not start servers") as caught:
            await hub.preflight("student3")

    assert "start:servers" in str(caught.value)
    assert writes(hub_standin) == []


async def test_the_token_is_checked_once_per_minute_not_per_order(
    hub_standin: StandinHub,
) -> None:
    async with client_for(hub_standin) as hub:
        await hub.preflight("student3")
        await hub.preflight("student4")

    assert [c.path for c in hub_standin.calls] == [
        "/hub/api/user", "/hub/api/users/student3", "/hub/api/users/student4"
    ]


async def test_a_url_that_is_not_a_hub_is_named(portal_standin: StandinPortal) -> None:
    # hub.url pointing at another service (here the portal's API-DB stand-in).
    async with HubClient(portal_standin.root_url, HUB_TOKEN) as hub:
        with pytest.raises(PeerMisconfigured, match="does not look like a JupyterHub"):
            await hub.preflight("student3")


async def test_a_token_that_cannot_see_servers_is_a_configuration_error(
    hub_standin: StandinHub,
) -> None:
    async with client_for(hub_standin) as hub:
        await hub.start_server("student3")
        hub_standin.set_scopes("read:users", "delete:servers")
        with pytest.raises(PeerMisconfigured, match="needs the read:servers scope"):
            await hub.stop_server("student3")


async def test_a_slow_spawn_is_followed_until_ready(hub_standin: StandinHub) -> None:
    hub_standin.set_slow(start=3)
    pauses = Pauses()
    async with client_for(hub_standin, poll_seconds=0.5) as hub:
        assert await hub.start_server("student3", pause=pauses) == "started"

    assert hub_standin.is_running("student3")
    assert writes(hub_standin) == [("POST", "/hub/api/users/student3/server", 202)]
    assert pauses.seconds == [0.5, 0.5]  # ready at the third look


async def test_a_spawn_that_fails_while_pending_says_why(hub_standin: StandinHub) -> None:
    hub_standin.set_slow(start=2)
    hub_standin.fail_spawns()
    async with client_for(hub_standin) as hub:
        with pytest.raises(PeerUnavailable, match="student3's server failed to start") as caught:
            await hub.start_server("student3", pause=Pauses())

    assert "Spawn failed: the stand-in hub was told to fail it" in str(caught.value)


async def test_a_spawn_still_pending_at_the_deadline_is_transient(
    hub_standin: StandinHub,
) -> None:
    hub_standin.set_slow(start=100)
    async with client_for(hub_standin) as hub:
        with pytest.raises(PeerUnavailable, match=r"still starting \(pending spawn\) after 0 s"):
            await hub.start_server("student3", within=0, pause=Pauses())
        # Retried (as the order's step does), it follows the same spawn: no second one.
        hub_standin.set_slow(start=0)
        with pytest.raises(PeerUnavailable, match="still starting"):
            await hub.start_server("student3", within=0, pause=Pauses())

    assert [status for _, _, status in writes(hub_standin)] == [202, 202]


async def test_a_start_while_a_stop_is_pending_waits_for_it(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        await hub.start_server("student3")
        hub_standin.set_slow(stop=2)
        with pytest.raises(PeerUnavailable, match="still stopping"):
            await hub.stop_server("student3", within=0, pause=Pauses())
        assert await hub.start_server("student3", pause=Pauses()) == "started"

    assert [status for _, _, status in writes(hub_standin)] == [201, 202, 400, 201]
    assert hub_standin.is_running("student3")


async def test_a_slow_stop_is_followed_until_gone(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        await hub.start_server("student3")
        hub_standin.set_slow(stop=2)
        assert await hub.stop_server("student3", pause=Pauses()) == "stopped"

    assert not hub_standin.running_servers()


@pytest.mark.parametrize("drop", [False, True], ids=["503", "dropped"])
async def test_hub_down_then_up_again(hub_standin: StandinHub, drop: bool) -> None:
    async with client_for(hub_standin) as hub:
        hub_standin.set_down(True, drop=drop)
        with pytest.raises(PeerUnavailable):
            await hub.start_server("student3")
        hub_standin.set_down(False)
        assert await hub.start_server("student3") == "started"


async def test_a_500_is_transient(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        await hub.start_server("student3")
        hub_standin.fail_next(1, status=500)
        with pytest.raises(PeerUnavailable, match=r"GET /hub/api/users/student3 failed \(500"):
            await hub.stop_server("student3")
        assert await hub.stop_server("student3") == "stopped"


async def test_a_hub_too_slow_to_answer_times_out(hub_standin: StandinHub) -> None:
    hub_standin.set_delay(2.0)
    async with client_for(hub_standin, timeout=0.2) as hub:
        with pytest.raises(PeerUnavailable, match="no answer within 0.2 s"):
            await hub.start_server("student3")


async def test_a_bad_user_name_is_refused_before_any_call(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        with pytest.raises(ValueError, match="not a JupyterHub user name"):
            await hub.start_server("../admin")

    assert hub_standin.calls == []


async def test_calls_are_logged_without_the_token(hub_standin: StandinHub) -> None:
    with capture_logs() as entries:
        async with client_for(hub_standin) as hub:
            await hub.start_server("student3")
            await hub.stop_server("student3")

    calls = [entry for entry in entries if entry["event"] == "hub call"]
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("POST", "/hub/api/users/student3/server", 201),
        ("GET", "/hub/api/users/student3", 200),
        ("DELETE", "/hub/api/users/student3/server", 204),
    ]
    assert hub_standin.token not in repr(entries)


def test_the_default_timeout_outlasts_the_hubs_own_slow_timeouts() -> None:
    # JupyterHub answers a slow spawn or stop with 202 after 10 s (slow_spawn_timeout,
    # slow_stop_timeout); a client timeout at or under that turns every slow one into a retry.
    assert Hub().timeout_seconds > 10
    assert HubClient("http://hub", "t")._http.timeout.read == Hub().timeout_seconds
