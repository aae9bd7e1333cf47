"""What an admin must fix on an appliance is said as such, naming the appliance and the
account, and never retried: a key the appliance does not accept, sudo asking a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.appliance_pool import Connect
from support.appliances import ApplianceFactory, make_keypair
from wodmail.errors import ApplianceCommandFailed, PeerMisconfigured, TransientError


async def test_sudo_asking_for_a_password_is_a_misconfiguration(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    appliance.break_sudo()
    _, port = connect_to(appliance)

    assert (await port.run("id", "-un")).stdout == "wodadmin\n"
    with pytest.raises(PeerMisconfigured) as refused:
        await port.run("chpasswd", sudo=True, input="student1:Some-Password\n")
    with pytest.raises(PeerMisconfigured):
        await port.run("id", "-un", user="student1")

    assert not isinstance(refused.value, TransientError)
    assert str(refused.value) == (
        f"appliance {appliance.address}: sudo refused for wodadmin (a password is required): "
        "give wodadmin passwordless sudo on the appliance (NOPASSWD in sudoers)")
    assert port.calls[-2].name == f"appliance {appliance.address}: sudo chpasswd"
    assert not port.calls[-2].ok
    assert appliance.shadow("student1") == "!"


async def test_a_key_the_appliance_does_not_accept_is_a_misconfiguration(
        appliance_factory: ApplianceFactory, connect_to: Connect, tmp_path: Path) -> None:
    appliance = appliance_factory()
    stranger = make_keypair(tmp_path / "other-key")
    _, port = connect_to(appliance, key=stranger)

    with pytest.raises(PeerMisconfigured) as refused:
        await port.run("true")

    assert not isinstance(refused.value, TransientError)
    assert str(refused.value).startswith(
        f"appliance {appliance.address}: refused the ssh login as wodadmin")


async def test_a_missing_key_file_is_a_misconfiguration_naming_it(
        appliance_factory: ApplianceFactory, connect_to: Connect, tmp_path: Path) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance, key=tmp_path / "no-such-key")

    with pytest.raises(PeerMisconfigured, match=f"cannot use the ssh key {tmp_path}/no-such-key"):
        await port.run("true")


async def test_a_failed_command_says_its_status_and_output(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance)

    with pytest.raises(ApplianceCommandFailed) as failed:
        await port.run("sh", "-c", "echo out; echo err >&2; exit 3")
    unchecked = await port.run("sh", "-c", "exit 4", check=False)

    assert failed.value.status == 3
    assert failed.value.output == "out\nerr\n"
    assert str(failed.value) == (f"appliance {appliance.address}: sh -c 'echo out; echo err "
                                 ">&2; exit 3': exited with status 3")
    assert unchecked.status == 4 and not unchecked.ok
