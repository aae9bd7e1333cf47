"""`wodmail check-config` reaches each appliance the variables name (IP-WKSHP-*) and says
whether wodmail can log in, what its host key is, whether sudo asks a password, and which
docker and compose it has; it pins nothing."""

from __future__ import annotations

from pathlib import Path

from support.appliance_pool import appliance_settings
from support.appliances import ApplianceFactory, KeyPair
from wodmail.config import parse_config
from wodmail.configcheck import Check, run_checks


def _checks(tmp_path: Path, appliance, key: KeyPair) -> list[Check]:
    config = parse_config({
        "state_dir": str(tmp_path / "state"),
        "listen": {"port": 0}, "status": {"listen": None},
        "vars": {"IP-WKSHP-Docker101": appliance.address, "IP-WKSHP-Stock": "x.y.z.t"},
        "appliances": appliance_settings(appliance, key),
    }, "test-config")
    return [check for check in run_checks(config) if check.what.startswith("appliance ")]


def test_check_config_reports_login_host_key_sudo_and_tools(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory()
    address = appliance.address

    found = {check.what: check for check in _checks(tmp_path, appliance, admin_keypair)}

    assert found[f"appliance {address}"].status == "ok"
    assert found[f"appliance {address}"].detail == (
        f"(IP-WKSHP-Docker101) login as wodadmin; host key {appliance.host_key_fingerprint} "
        "(new: pinned at the first order)")
    assert (found[f"appliance {address} sudo"].status,
            found[f"appliance {address} sudo"].detail) == ("ok", "sudo -n true: allowed")
    assert found[f"appliance {address} tools"].status == "warn"  # no docker in this one
    # the image workshops/docker101.py builds FROM (its IMAGES)
    assert found[f"appliance {address} images"].status == "warn"
    assert found[f"appliance {address} images"].detail.startswith("missing dockerlab:latest")
    assert found["appliance IP-WKSHP-Stock"].status == "warn"
    assert not (tmp_path / "state" / "appliance_known_hosts").exists()


def test_check_config_warns_of_sudo_asking_a_password_and_of_a_changed_key(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory()
    address = appliance.address
    appliance.break_sudo()
    state = tmp_path / "state"
    state.mkdir()
    (state / "appliance_known_hosts").write_text(f"{appliance.known_hosts_line()}\n")

    found = {check.what: check for check in _checks(tmp_path, appliance, admin_keypair)}
    assert found[f"appliance {address}"].detail.endswith(
        f"{appliance.host_key_fingerprint} (pinned)")
    assert found[f"appliance {address} sudo"].status == "warn"
    assert "a password is required" in found[f"appliance {address} sudo"].detail

    appliance.regenerate_host_key()
    found = {check.what: check for check in _checks(tmp_path, appliance, admin_keypair)}
    assert found[f"appliance {address}"].status == "warn"
    assert "host key changed" in found[f"appliance {address}"].detail
    assert f"offered {appliance.host_key_fingerprint}" in found[f"appliance {address}"].detail
