"""wodmail's appliance pool against real sshd appliances: one kept connection per appliance,
channels capped, idle connections closed, an appliance that went away and came back."""

from __future__ import annotations

import asyncio
import time

import pytest

from support.appliance_pool import Connect, eventually
from support.appliances import ApplianceFactory
from wodmail.errors import PeerUnavailable


async def test_twenty_calls_take_one_connection(appliance_factory: ApplianceFactory,
                                                connect_to: Connect) -> None:
    appliance = appliance_factory()
    pool, port = connect_to(appliance)

    hostnames = [(await port.run("hostname")).stdout.strip() for _ in range(20)]

    assert hostnames == [appliance.hostname] * 20
    assert pool.opened == 1
    assert appliance.log.count("Accepted publickey for wodadmin") == 1
    assert [call.name for call in port.calls] == [f"appliance {appliance.address}: hostname"] * 20
    assert all(call.ok and call.output == f"{appliance.hostname}\n" for call in port.calls)


async def test_concurrent_calls_share_the_connection_at_most_max_channels_at_once(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    pool, port = connect_to(appliance, max_channels=2)
    # Each call says how many calls were running on the appliance when it started (itself
    # included), then holds its channel a while.
    script = ("mkdir -p /tmp/running; touch /tmp/running/$$; ls /tmp/running | wc -l; "
              "sleep 1.5; rm /tmp/running/$$")

    done = await asyncio.gather(*(port.run("sh", "-c", script) for _ in range(6)))

    running = [int(result.stdout) for result in done]
    assert max(running) == 2, running
    assert pool.opened == 1


async def test_an_idle_connection_is_closed_and_the_next_call_opens_another(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    pool, port = connect_to(appliance, idle_seconds=1)
    await port.run("true")
    assert pool.open_connections()

    await eventually(lambda: not pool.open_connections(), "the idle connection closed")
    await eventually(lambda: not _sessions(appliance), "sshd saw the connection close")
    await port.run("true")

    assert pool.opened == 2


async def test_a_busy_connection_is_not_closed_as_idle(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    pool, port = connect_to(appliance, idle_seconds=0.5)

    done = await port.run("sh", "-c", "sleep 3; echo still-here")

    assert done.stdout == "still-here\n"
    assert pool.opened == 1


async def test_an_appliance_stopped_mid_call_is_unavailable_then_reached_again(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    pool, port = connect_to(appliance, connect_timeout_seconds=5)
    await port.run("true")
    running = asyncio.create_task(port.run("sleep", "60"))
    await eventually(lambda: any(p.startswith("sleep 60") for p in appliance.processes()),
                     "the long command started")

    await asyncio.to_thread(appliance.stop)
    with pytest.raises(PeerUnavailable) as lost:
        await asyncio.wait_for(running, 60)
    with pytest.raises(PeerUnavailable) as refused:
        await port.run("true")
    await asyncio.to_thread(appliance.start)
    again = await port.run("hostname")

    assert f"appliance {appliance.address}" in str(lost.value)
    assert "refused" in str(refused.value).lower(), refused.value
    assert again.stdout.strip() == appliance.hostname
    assert pool.opened == 2
    failed = [call for call in port.calls if not call.ok]
    assert [call.name for call in failed] == [
        f"appliance {appliance.address}: sleep 60", f"appliance {appliance.address}: true"]


async def test_a_dead_kept_connection_is_reopened_once_and_the_call_goes_through(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    pool, port = connect_to(appliance)
    await port.run("true")

    # Restarted without letting the event loop run: the pool still holds the connection the
    # appliance's end of which is gone, and finds out when it opens the next channel on it.
    appliance.stop()
    appliance.start()
    started = time.monotonic()
    done = await port.run("hostname")

    assert done.stdout.strip() == appliance.hostname
    assert pool.opened == 2
    assert all(call.ok for call in port.calls)
    print(f"dead connection found and replaced in {time.monotonic() - started:.2f} s")


def _sessions(appliance) -> list[str]:
    """sshd processes serving a connection (besides the listener)."""
    return [p for p in appliance.processes() if p.startswith("sshd: wodadmin")]
