"""HubClient against the JupyterHub stand-in, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from wodmail.errors import PeerMisconfigured, PeerRefused, PeerUnavailable
from wodmail.hub import HubClient
from wodmail.standins import StandinHub

pytest_plugins = ["standin_fixtures"]

HUB_TOKEN = "hub-token-for-hub-tests-3b7e"


def client_for(hub: StandinHub, token: str | None = None, **kwargs: float) -> HubClient:
    kwargs.setdefault("timeout", 5.0)
    return HubClient(hub.url, token or hub.token, **kwargs)


async def test_start_then_start_again_is_fine(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin) as hub:
        assert await hub.start_server("student3") == "started"
        assert await hub.start_server("student3") == "already running"

    assert hub_standin.is_running("student3")
    assert [c.status for c in hub_standin.calls] == [201, 400]
    assert hub_standin.calls[0].json == {}


@pytest.mark.parametrize("not_running_status", [400, 204, 404], ids=["1.x", "2.x-4.x", "5.x"])
async def test_stop_then_stop_again_is_fine(not_running_status: int) -> None:
    with StandinHub(HUB_TOKEN, stop_not_running_status=not_running_status) as standin:
        async with client_for(standin) as hub:
            await hub.start_server("student3")
            assert await hub.stop_server("student3") == "stopped"
            second = await hub.stop_server("student3")

        assert not standin.is_running("student3")
        assert [c.status for c in standin.calls if c.method == "DELETE"] == [
            204,
            not_running_status,
        ]
    assert second == ("stopped" if not_running_status == 204 else "not running")


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
            with pytest.raises(PeerRefused, match="no user 'student9'"):
                await hub.get_user("student9")
            assert await hub.stop_server("student9") == "not running"
            with pytest.raises(PeerRefused, match="404"):
                await hub.start_server("student9")


async def test_a_wrong_token_is_a_configuration_error(hub_standin: StandinHub) -> None:
    async with client_for(hub_standin, token="not-the-hub-token") as hub:
        with pytest.raises(PeerMisconfigured, match="needs the 'servers' scope") as caught:
            await hub.start_server("student3")

    assert "not-the-hub-token" not in str(caught.value)
    assert caught.value.status == 403
    assert not hub_standin.is_running("student3")


async def test_a_token_without_the_scope_is_a_configuration_error(
    hub_standin: StandinHub,
) -> None:
    hub_standin.set_scopes("read:users")
    async with client_for(hub_standin) as hub:
        assert (await hub.get_user("student3"))["name"] == "student3"
        with pytest.raises(PeerMisconfigured, match="may not stop servers"):
            await hub.stop_server("student3")


@pytest.mark.parametrize("drop", [False, True], ids=["503", "dropped"])
async def test_hub_down_then_up_again(hub_standin: StandinHub, drop: bool) -> None:
    async with client_for(hub_standin) as hub:
        hub_standin.set_down(True, drop=drop)
        with pytest.raises(PeerUnavailable):
            await hub.start_server("student3")
        hub_standin.set_down(False)
        assert await hub.start_server("student3") == "started"


async def test_a_500_is_transient(hub_standin: StandinHub) -> None:
    hub_standin.fail_next(1, status=500)
    async with client_for(hub_standin) as hub:
        with pytest.raises(PeerUnavailable, match=r"DELETE /hub/api/users/student3/server failed"):
            await hub.stop_server("student3")


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
        ("DELETE", "/hub/api/users/student3/server", 204),
    ]
    assert hub_standin.token not in repr(entries)
