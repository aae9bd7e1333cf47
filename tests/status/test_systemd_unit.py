"""The shipped systemd units: their key settings, `systemd-analyze verify` and the exposure
score of `systemd-analyze security` (both skipped, saying so, where systemd is absent)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.paths import REPO
from wodmail.config import Config
from wodmail.service import SESSION_GRACE_SECONDS

UNIT = REPO / "systemd" / "wodmail.service"
SOCKET = REPO / "systemd" / "wodmail.socket"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (scripts/system-deps.sh installs "
    "the systemd package when run as root)")

# Every capability the unit keeps, each with the reason given in the unit and the README.
KEPT = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
        "CAP_KILL", "CAP_SETUID", "CAP_SETGID", "CAP_AUDIT_WRITE"}


def settings(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> values, as systemd reads them (comments and blank lines ignored)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def one(found: dict[str, list[str]], key: str) -> str:
    assert len(found.get(key, [])) == 1, f"{key}: {found.get(key)}"
    return found[key][0]


def test_the_unit_is_a_notify_service_with_watchdog_reload_and_a_bounded_stop():
    unit = settings(UNIT)
    assert one(unit, "Service.Type") == "notify"
    assert one(unit, "Service.NotifyAccess") == "main"
    # The shell's own kill: /bin/kill is procps's, absent from a minimal Debian.
    assert one(unit, "Service.ExecReload") == (
        "/bin/sh -c 'kill -HUP \"$1\"' wodmail-reload $MAINPID")
    assert one(unit, "Service.Restart") == "on-failure"
    # The loop beats every second: the watchdog must allow for a loaded machine.
    assert int(one(unit, "Service.WatchdogSec")) >= 10
    # Sessions and running orders get their graces; a margin is left before SIGKILL.
    stop = int(one(unit, "Service.TimeoutStopSec"))
    graces = SESSION_GRACE_SECONDS + Config().dispatch.stop_grace_seconds
    assert stop >= graces + 10
    # One descriptor per SMTP session, and plenty for the rest.
    assert int(one(unit, "Service.LimitNOFILE")) >= 4 * Config().listen.max_connections


def test_the_unit_keeps_only_the_documented_capabilities_and_sandboxes_the_rest():
    unit = settings(UNIT)
    assert set(one(unit, "Service.CapabilityBoundingSet").split()) == KEPT
    text = UNIT.read_text()
    readme = (REPO / "README.md").read_text()
    for capability in KEPT:
        assert re.search(rf"^#.*{capability}\b", text, re.M), f"{capability}: no reason in unit"
        assert capability in readme, f"{capability} is not documented in the README"
    assert one(unit, "Service.ProtectSystem") == "strict"
    assert set(one(unit, "Service.ReadWritePaths").split()) == {
        "/etc", "/home", "-/student", "-/run/sudo"}
    # strict leaves /home, /root and /run/user to ProtectHome=; read-only would take /home
    # (WODUSER's), so /root and /run/user are made read-only one by one.
    assert one(unit, "Service.ProtectHome") == "no"
    assert set(one(unit, "Service.ReadOnlyPaths").split()) == {"-/root", "-/run/user"}
    assert one(unit, "Service.StateDirectory") == "wodmail"
    for key in ("PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
                "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality"):
        assert one(unit, f"Service.{key}") == "yes", key
    assert one(unit, "Service.SystemCallFilter") == "@system-service"


def test_the_documentation_the_units_name_is_installed_by_the_readme_steps():
    readme = (REPO / "README.md").read_text()
    for path in (UNIT, SOCKET):
        for uri in settings(path)["Unit.Documentation"]:
            assert uri.startswith("file://"), uri
            assert uri.removeprefix("file://") in readme, f"{uri} is not installed by README"


def _installable(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this wodmail (verify wants it to exist)."""
    wodmail = Path(sys.executable).parent / "wodmail"
    for path in (UNIT, SOCKET):
        text = path.read_text().replace("/opt/wodmail/.venv/bin/wodmail", str(wodmail))
        (tmp_path / path.name).write_text(text)
    return tmp_path / UNIT.name


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path):
    service = _installable(tmp_path)
    result = subprocess.run([ANALYZE, "verify", str(service), str(tmp_path / SOCKET.name)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # verify prints warnings without failing: there must be none about our units.
    assert "wodmail" not in result.stderr, result.stderr


@needs_analyze
def test_systemd_analyze_security_rates_the_unit_well_below_the_old_9_6(tmp_path):
    service = _installable(tmp_path)
    result = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(service)],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for wodmail.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    print(f"systemd-analyze security exposure: {match.group(1)}")
    assert float(match.group(1)) <= 4.0
