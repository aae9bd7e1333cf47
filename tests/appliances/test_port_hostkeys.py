"""Appliance host keys: pinned at first use in wodmail's own file, or taken from an admin's
known_hosts; a changed key is refused naming both fingerprints, until an admin accepts it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from support.appliance_pool import Connect
from support.appliances import ApplianceFactory
from wodmail import cli
from wodmail.errors import PeerMisconfigured, TransientError


async def test_the_first_key_is_pinned_and_a_changed_one_refused_until_forgotten(
        appliance_factory: ApplianceFactory, connect_to: Connect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    appliance = appliance_factory()
    state = tmp_path / "state"
    pool, port = connect_to(appliance, state_dir=state)
    pins = state / "appliance_known_hosts"

    await port.run("true")

    assert pins.read_text() == f"{appliance.known_hosts_line()}\n"
    assert stat.S_IMODE(pins.stat().st_mode) == 0o600
    old, old_line = appliance.host_key_fingerprint, appliance.known_hosts_line()
    appliance.regenerate_host_key()
    new = appliance.host_key_fingerprint
    assert new != old

    _, later = connect_to(appliance, state_dir=state)  # a new daemon: no kept connection
    with pytest.raises(PeerMisconfigured) as refused:
        await later.run("true")
    message = str(refused.value)
    assert not isinstance(refused.value, TransientError)
    assert message.startswith(f"appliance {appliance.address}: host key changed")
    assert f"expected {old}" in message and f"offered {new}" in message
    assert f"wodmail appliance forget {appliance.address}" in message
    assert pins.read_text() == f"{old_line}\n"
    assert appliance.log.count("Accepted publickey") == 1, "the refused key got a login"

    config = tmp_path / "wodmail.yml"
    config.write_text(f"state_dir: {state}\n")
    assert cli.main(["appliance", "forget", appliance.address, "--config", str(config)]) == 0
    assert "forgotten" in capsys.readouterr().out
    await later.run("true")
    assert pins.read_text() == f"{appliance.known_hosts_line()}\n"


async def test_a_configured_known_hosts_file_is_used_as_is(
        appliance_factory: ApplianceFactory, connect_to: Connect, tmp_path: Path) -> None:
    listed, unlisted = appliance_factory(), appliance_factory(students=range(1, 3))
    known = tmp_path / "known_hosts"
    known.write_text(f"{listed.known_hosts_line()}\n")
    state = tmp_path / "state"

    _, port = connect_to(listed, known_hosts=str(known), state_dir=state)
    assert (await port.run("hostname")).stdout.strip() == listed.hostname

    _, other = connect_to(unlisted, known_hosts=str(known), state_dir=state)
    with pytest.raises(PeerMisconfigured) as refused:
        await other.run("true")
    assert str(refused.value) == (
        f"appliance {unlisted.address}: its host key {unlisted.host_key_fingerprint} is not in "
        f"appliances.known_hosts ({known}): add the appliance's key there "
        f"(ssh-keyscan {unlisted.address})")
    assert known.read_text() == f"{listed.known_hosts_line()}\n"
    assert not (state / "appliance_known_hosts").exists()

    listed.regenerate_host_key()
    _, again = connect_to(listed, known_hosts=str(known), state_dir=state)
    with pytest.raises(PeerMisconfigured, match="host key changed: expected SHA256:"):
        await again.run("true")
