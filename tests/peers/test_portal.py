"""PortalClient against the API-DB stand-in, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from wodmail.dev.standins import StandinPortal
from wodmail.errors import PeerMisconfigured, PeerRefused, PeerUnavailable
from wodmail.peers.portal import PortalClient, PortalWorkshop

MODERATOR = StandinPortal.MODERATOR_USER
PASSWORD = StandinPortal.MODERATOR_PASSWORD


def client_for(portal: StandinPortal, **kwargs: float) -> PortalClient:
    kwargs.setdefault("timeout", 5.0)
    return PortalClient(portal.url, MODERATOR, PASSWORD, **kwargs)


def statuses(portal: StandinPortal, method: str, suffix: str) -> list[int | None]:
    return [c.status for c in portal.calls if c.method == method and c.path.endswith(suffix)]


@pytest.fixture
def seeded(portal_standin: StandinPortal) -> StandinPortal:
    portal_standin.add_workshop(id=7, notebook="WKSHP-API101", compile="a.sh,b.sh")
    portal_standin.add_workshop(id=8, notebook="WKSHP-Docker101")
    portal_standin.add_student(425, username="student25")
    portal_standin.add_customer(12, studentId=425)
    return portal_standin


# login and the token


async def test_logs_in_once_and_reuses_the_token(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        await portal.update_student(425, password="n3w-pass")
        await portal.update_customer(12, active=True)
        assert (await portal.get_student(425))["password"] == "n3w-pass"

    assert len(seeded.logins()) == 1
    assert seeded.logins()[0].json == {"username": MODERATOR, "password": "***"}
    assert seeded.customer(12)["active"] is True


async def test_renews_the_token_before_it_expires(
    make_portal: Callable[..., StandinPortal],
) -> None:
    # The portal would still take the token (5 s): the second login can only be the
    # client renewing on its own, 0.8 s into the 1 s life it was told about.
    standin = make_portal(token_ttl=5.0)
    standin.add_student(1)
    async with client_for(standin, token_ttl=1.0) as portal:
        await portal.get_student(1)
        await asyncio.sleep(0.9)  # older than ttl minus the margin
        await portal.get_student(1)

    assert len(standin.logins()) == 2
    assert 401 not in statuses(standin, "GET", "/students/1")


async def test_relogs_in_transparently_when_the_portal_says_401(
    make_portal: Callable[..., StandinPortal],
) -> None:
    standin = make_portal(token_ttl=0.3)
    standin.add_student(1)
    async with client_for(standin, token_ttl=180.0) as portal:
        await portal.get_student(1)
        await asyncio.sleep(0.4)  # the portal expired the token; the client thinks it is fine
        student = await portal.get_student(1)

    assert student["username"] == "student1"
    assert statuses(standin, "GET", "/students/1") == [200, 401, 200]
    assert len(standin.logins()) == 2


async def test_tokens_expired_between_calls_are_replaced(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        await portal.update_student(425, assigned=True)
        seeded.expire_tokens()
        await portal.update_student(425, assigned=False)

    assert seeded.student(425)["assigned"] is False
    assert [c.status for c in seeded.writes()] == [200, 401, 200]


async def test_twenty_concurrent_calls_share_one_login(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        students = await asyncio.gather(*(portal.get_student(425) for _ in range(20)))

    assert all(student["id"] == 425 for student in students)
    assert len(seeded.logins()) == 1


async def test_a_fresh_token_refused_is_a_configuration_error(
    make_portal: Callable[..., StandinPortal],
) -> None:
    standin = make_portal(token_ttl=1e-6)  # every token is dead on arrival
    standin.add_student(1)
    async with client_for(standin) as portal:
        with pytest.raises(PeerMisconfigured, match="a token just issued to 'moderator'"):
            await portal.get_student(1)

    assert statuses(standin, "GET", "/students/1") == [401, 401]


async def test_a_login_answer_without_a_token_is_a_configuration_error(
    seeded: StandinPortal,
) -> None:
    seeded.fail_next(1, status=200)  # the login "succeeds" with a body that has no token
    async with client_for(seeded) as portal:
        with pytest.raises(PeerMisconfigured, match="without an accessToken"):
            await portal.get_student(425)


# credentials and roles


async def test_wrong_password_reports_the_portals_message(seeded: StandinPortal) -> None:
    async with PortalClient(seeded.url, MODERATOR, "not-the-password", timeout=5) as portal:
        with pytest.raises(PeerMisconfigured, match="Invalid Password!") as caught:
            await portal.update_student(425, assigned=True)

    assert "not-the-password" not in str(caught.value)
    assert caught.value.status == 401


async def test_unknown_user_reports_the_portals_message(seeded: StandinPortal) -> None:
    async with PortalClient(seeded.url, "nobody", "whatever", timeout=5) as portal:
        with pytest.raises(PeerMisconfigured, match=r"'nobody'.*User Not found\."):
            await portal.get_student(425)


async def test_an_account_without_the_moderator_role_cannot_write(seeded: StandinPortal) -> None:
    user, password = StandinPortal.PLAIN_USER, StandinPortal.PLAIN_PASSWORD
    async with PortalClient(seeded.url, user, password, timeout=5) as portal:
        assert (await portal.get_student(425))["id"] == 425  # reads are allowed
        with pytest.raises(PeerMisconfigured, match="Require Moderator or Admin Role!") as caught:
            await portal.update_student(425, password="x")

    assert "moderator or admin role" in str(caught.value)
    assert seeded.student(425)["password"] == ""


# the API-DB's odd 400s


async def test_put_on_an_unknown_id_names_the_record(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        with pytest.raises(PeerRefused, match="student 426 does not exist in the API-DB") as caught:
            await portal.update_student(426, password="x")

    assert not isinstance(caught.value, PeerMisconfigured | PeerUnavailable)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("get_workshop", "workshop 999 does not exist.*Workshop Not Found"),
        ("get_student", "student 999 does not exist.*Student Not Found"),
    ],
)
async def test_plain_text_400_for_a_missing_record(
    seeded: StandinPortal, read: str, expected: str
) -> None:
    async with client_for(seeded) as portal:
        with pytest.raises(PeerRefused, match=expected):
            await getattr(portal, read)(999)


async def test_an_unknown_route_points_at_the_base_url(seeded: StandinPortal) -> None:
    async with PortalClient(seeded.root_url + "/wrong", MODERATOR, PASSWORD) as portal:
        with pytest.raises(PeerRefused, match="Cannot GET /wrong/workshops/7"):
            await portal.get_workshop(7)


# the portal unavailable


@pytest.mark.parametrize("drop", [False, True], ids=["503", "dropped"])
async def test_portal_down_then_up_again(seeded: StandinPortal, drop: bool) -> None:
    async with client_for(seeded) as portal:
        seeded.set_down(True, drop=drop)
        with pytest.raises(PeerUnavailable):
            await portal.update_customer(12, cleaned=True)
        seeded.set_down(False)
        await portal.update_customer(12, cleaned=True)

    assert seeded.customer(12)["cleaned"] is True


async def test_a_500_is_transient(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        seeded.fail_next(1, status=500)
        with pytest.raises(PeerUnavailable, match="GET /workshops/7 failed \\(500"):
            await portal.get_workshop(7)
        assert (await portal.get_workshop(7))["notebook"] == "WKSHP-API101"


async def test_a_portal_too_slow_to_answer_times_out(seeded: StandinPortal) -> None:
    seeded.set_delay(2.0)
    async with client_for(seeded, timeout=0.2) as portal:
        with pytest.raises(PeerUnavailable, match="no answer within 0.2 s"):
            await portal.get_workshop(7)


async def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with PortalClient(f"http://127.0.0.1:{port}/api", MODERATOR, PASSWORD) as portal:
        with pytest.raises(PeerUnavailable, match="cannot reach"):
            await portal.list_workshops()


# workshops


async def test_the_workshop_list_is_cached_briefly(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        await portal.find_workshop("WKSHP-API101")
        await portal.find_workshop("WKSHP-Docker101")
        await portal.list_workshops()
    async with client_for(seeded, workshops_cache_seconds=0) as uncached:
        await uncached.list_workshops()
        await uncached.list_workshops()

    assert statuses(seeded, "GET", "/workshops") == [200, 200, 200]


async def test_updating_a_workshop_refreshes_the_cached_list(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        await portal.list_workshops()
        await portal.update_workshop(7, capacity=5)
        found = await portal.find_workshop("WKSHP-API101")

    assert found is not None and found["capacity"] == 5


async def test_find_workshop_matches_the_notebook_then_the_fallback(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        direct = await portal.find_workshop("WKSHP-Docker101")
        fallback = await portal.find_workshop("CHLG-API101", fallback="WKSHP-API101")
        missing = await portal.find_workshop("WKSHP-Nope", fallback="WKSHP-Nope2")

    assert direct is not None and direct["id"] == 8
    assert fallback is not None and fallback["id"] == 7
    assert missing is None


async def test_updates_send_real_json_types(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        await portal.update_customer(12, active=True, completionPercentage=42)

    assert seeded.writes()[-1].json == {"active": True, "completionPercentage": 42}


async def test_the_standin_accepts_string_booleans(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        updated = await portal.update_customer(12, cleaned="true")

    assert updated["cleaned"] is True


async def test_bad_arguments_are_refused_before_any_call(seeded: StandinPortal) -> None:
    async with client_for(seeded) as portal:
        with pytest.raises(ValueError, match="at least one field"):
            await portal.update_student(425)
        with pytest.raises(ValueError, match="non-negative integer"):
            await portal.get_student("425")  # type: ignore[arg-type]

    assert seeded.calls == []


def test_portal_workshop_reads_odd_records() -> None:
    workshop = PortalWorkshop.model_validate(
        {
            "id": 3,
            "notebook": "WKSHP-API101",
            "compile": "a.sh, b.sh",
            "reset": "true",
            "ldap": "false",
            "varpass": None,
            "range": [1, 20],
            "capacity": None,
            "createdAt": "2024-01-01",
        }
    )
    assert workshop.compile == ("a.sh", "b.sh")
    assert (workshop.reset, workshop.ldap, workshop.varpass) == (True, False, False)
    assert workshop.range == (1, 20) and workshop.capacity == 0
    assert PortalWorkshop.model_validate({"id": 1, "notebook": "W", "compile": False}).compile == ()
    assert PortalWorkshop.model_validate({"id": 1, "notebook": "W", "compile": None}).compile == ()
    # As the procmail API's `= "true"` tests: anything but true / "true" is false.
    assert not PortalWorkshop.model_validate({"id": 1, "notebook": "W", "reset": "maybe"}).reset


# logs


async def test_every_call_is_logged_without_secrets(seeded: StandinPortal) -> None:
    with capture_logs() as entries:
        async with client_for(seeded) as portal:
            await portal.update_student(425, password="student-secret-99")
            seeded.expire_tokens()
            await portal.get_customer(12)
            with pytest.raises(PeerRefused):
                await portal.update_student(426, password="student-secret-99")

    calls = [entry for entry in entries if entry["event"] == "portal call"]
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("POST", "/login", 200),
        ("PUT", "/student/425", 200),
        ("GET", "/customers/12", 401),
        ("POST", "/login", 200),
        ("GET", "/customers/12", 200),
        ("PUT", "/student/426", 400),
    ]
    assert all(isinstance(c["duration_ms"], float) for c in calls)
    printed = repr(entries)
    for secret in [PASSWORD, "student-secret-99", *seeded.issued_tokens()]:
        assert secret not in printed
