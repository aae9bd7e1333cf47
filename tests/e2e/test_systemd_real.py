"""The shipped units under a real systemd (Debian 12's 252, PID 1 of a systemd-nspawn
container): wodmail installed from its wheel as the README says, the unit files unchanged.

Skips, with the reason, where a container cannot be booted (no root, no systemd-nspawn or
debootstrap, no cgroup v2). The first run builds the root file system with debootstrap
(about a minute) and caches it; see tests/support/nspawn.py.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import nspawn
from support.paths import REPO

WHY = nspawn.missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
if WHY is None and platform.machine() != "x86_64":
    pytestmark = pytest.mark.skip(reason="the wheelhouse for the container is built for x86_64")

PLATFORMS = ["manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "linux_x86_64"]
CONFIG = """\
allowed_networks: [127.0.0.0/8]
allowed_senders: [portal@example.org]
status:
  listen: 127.0.0.1:9925
students: {min: 1, max: 3}
notebooks: {public: /srv/notebooks}
handlers: {private: /etc/wodmail/handlers}
"""
SUBJECT = "CREATE 1 1 p1@example.com"
LIMIT = 120.0
# A private handler module whose create hook blocks the daemon's event loop (a synchronous
# sleep, as a careless handler would) on its first run only: the marker file says it ran.
STALL = "WKSHP-Stall"
MARKER = "/var/lib/wodmail/stalled-once"
STALLING_HANDLER = f"""\
import time
from pathlib import Path

from wodmail.hooks import HookContext

WORKSHOPS = ("{STALL}",)
MARKER = Path("{MARKER}")


async def create(ctx: HookContext) -> None:
    if not MARKER.exists():
        MARKER.write_text("the event loop was stalled once\\n")
        time.sleep(3600)  # no await: the loop stops, and with it WATCHDOG=1
"""
NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _wheelhouse(folder: Path) -> Path:
    """wodmail's wheel and its dependencies' wheels for the container's Python (3.11)."""
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(folder), str(REPO)], check=True,
                   capture_output=True, timeout=600)
    wheel = next(folder.glob("wodmail-*.whl"))
    platforms = [arg for name in PLATFORMS for arg in ("--platform", name)]
    subprocess.run([*pip, "download", "--only-binary=:all:", "--python-version", "3.11",
                    *platforms, "-d", str(folder), str(wheel)], check=True,
                   capture_output=True, timeout=600)
    return wheel


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nspawn.Container]:
    nspawn.leftovers("wodmail-test-")
    work = tmp_path_factory.mktemp("nspawn")
    tarball, built = nspawn.rootfs_tarball()
    if built:
        print(f"rootfs built in {built:.0f} s: {tarball}")
    rootfs = work / "rootfs"
    rootfs.mkdir()
    subprocess.run(["tar", "-C", str(rootfs), "--zstd", "-xf", str(tarball)], check=True,
                   timeout=600)
    wheel = _wheelhouse(rootfs / "opt" / "wheelhouse")
    # The shipped units, unchanged: the README installs wodmail where their paths point.
    units = rootfs / "etc" / "systemd" / "system"
    for unit in ("wodmail.service", "wodmail.socket"):
        (units / unit).write_bytes((REPO / "systemd" / unit).read_bytes())
    (rootfs / "etc" / "wodmail").mkdir(mode=0o700)
    (rootfs / "etc" / "wodmail" / "wodmail.yml").write_text(CONFIG)
    (rootfs / "student").mkdir()
    for workshop in ("WKSHP-API101", STALL):
        folder = rootfs / "srv" / "notebooks" / workshop
        folder.mkdir(parents=True)
        (folder / "0-ReadMeFirst.ipynb").write_text(NOTEBOOK)
    (rootfs / "etc" / "wodmail" / "handlers").mkdir(mode=0o700)
    (rootfs / "etc" / "wodmail" / "handlers" / "stall.py").write_text(STALLING_HANDLER)
    container = nspawn.Container(rootfs, nspawn.container_name("wodmail-test-", work.name))
    try:
        container.run("python3", "-m", "venv", "/opt/wodmail/.venv")
        container.run("/opt/wodmail/.venv/bin/pip", "-q", "install", "--no-index",
                      "--find-links", "/opt/wheelhouse", f"/opt/wheelhouse/{wheel.name}",
                      timeout=600)
        container.run("systemctl", "daemon-reload")
        container.run("useradd", "--home-dir", "/student/student3", "--create-home",
                      "--shell", "/bin/bash", "student3")
        container.run("chmod", "0750", "/student/student3")
        yield container
    finally:
        container.close()


def _state(box: nspawn.Container) -> tuple[str, str]:
    return box.show("wodmail.service", "ActiveState"), box.show("wodmail.service", "SubState")


def _wait_active(box: nspawn.Container) -> None:
    box.wait_for(lambda: _state(box) == ("active", "running"), "wodmail active")


def _python(box: nspawn.Container, code: str) -> str:
    return box.run("/opt/wodmail/.venv/bin/python", "-c", code).stdout


def _order(box: nspawn.Container, subject: str = SUBJECT, workshop: str = "WKSHP-API101") -> str:
    """One order through port 10025, as the portal sends it; the server's last reply."""
    return _python(box, f"""
import smtplib
from email.message import EmailMessage
m = EmailMessage(); m["From"] = "portal@example.org"; m["Subject"] = {subject!r}
m.set_content({workshop!r})
with smtplib.SMTP("127.0.0.1", 10025, timeout=60) as s:
    s.ehlo("portal"); s.mail("portal@example.org"); s.rcpt("wodadmin@backend")
    print(s.data(m.as_bytes()))
""")


def _health(box: nspawn.Container) -> dict:  # type: ignore[type-arg]
    out = _python(box, "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen("
                       "'http://127.0.0.1:9925/healthz', timeout=30).read().decode())")
    return json.loads(out)


def _jobs(box: nspawn.Container) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(box.run("/opt/wodmail/.venv/bin/wodmail", "jobs", "--json").stdout)


def test_start_is_activating_until_ready_then_active(box):
    box.run("systemctl", "start", "--no-block", "wodmail.service")
    seen = set()
    deadline = time.monotonic() + LIMIT
    while (state := _state(box)) != ("active", "running"):
        seen.add(state)
        assert state[0] in ("activating", "inactive"), (state, _journal(box))
        assert time.monotonic() < deadline, _journal(box)
    assert ("activating", "start") in seen, seen
    assert box.show("wodmail.service", "StatusText").startswith("listening on")
    box.run("systemctl", "stop", "wodmail.service")


def test_an_order_through_the_socket_unit_starts_wodmail_with_the_socket(box):
    box.run("systemctl", "start", "wodmail.socket")
    assert _state(box)[0] == "inactive"
    reply = _order(box)  # the connection itself starts wodmail
    assert "250" in reply and "job" in reply, reply
    _wait_active(box)
    pid = box.show("wodmail.service", "MainPID")
    log = box.run("journalctl", "-u", "wodmail", "-o", "cat", "--no-pager").stdout
    listening = [json.loads(line) for line in log.splitlines()
                 if '"wodmail listening"' in line]
    assert listening and listening[-1]["inherited"] is True, log[-3000:]
    jobs = _jobs(box)
    assert jobs and jobs[0]["verb"] == "CREATE", jobs
    assert pid != "0"


def test_reload_is_applied_and_shown_by_healthz(box):
    _wait_active(box)
    before = _health(box)["config"]
    started = time.monotonic()
    box.run("systemctl", "reload", "wodmail.service")
    returned = time.monotonic() - started
    # systemd 252 may return before READY=1: the state and /healthz tell when it is done.
    box.wait_for(lambda: _health(box)["config"]["reloads"] > before["reloads"], "the reload")
    _wait_active(box)
    after = _health(box)["config"]
    assert after["generation"] == before["generation"] + 1
    assert after["last_reload"] == "applied"
    print(f"systemctl reload returned after {returned * 1000:.0f} ms")


def test_wodmail_reload_wait_returns_with_the_config_applied(box):
    _wait_active(box)
    before = _health(box)["config"]
    # The admin's command finds the unit's daemon by the journal's lock (on the container's
    # overlay file system) and waits on /healthz: the generation has grown when it returns.
    done = box.run("/opt/wodmail/.venv/bin/wodmail", "reload", "--wait")
    assert f"generation {before['generation'] + 1}" in done.stdout, done.stdout + done.stderr
    assert _health(box)["config"]["generation"] == before["generation"] + 1


def _job(box: nspawn.Container, job: int) -> dict:  # type: ignore[type-arg]
    shown = box.run("/opt/wodmail/.venv/bin/wodmail", "show", str(job), "--json", check=False)
    return dict(json.loads(shown.stdout))


def test_a_stalled_event_loop_is_killed_by_the_watchdog_and_the_order_resumed(box):
    _wait_active(box)
    # A shorter watchdog for the test (a drop-in: the shipped unit stays as it is).
    box.run("mkdir", "-p", "/run/systemd/system/wodmail.service.d")
    box.run("sh", "-c", "printf '[Service]\\nWatchdogSec=3\\n' > "
                        "/run/systemd/system/wodmail.service.d/watchdog.conf")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "restart", "wodmail.service")
    _wait_active(box)
    old = box.show("wodmail.service", "MainPID")
    restarts = int(box.show("wodmail.service", "NRestarts"))
    reply = _order(box, "CREATE 3 3 p3@example.com", STALL)
    match = re.search(r"job (\d+)", reply)
    assert "250" in reply and match, reply
    job = int(match.group(1))
    # The create hook blocks the event loop: no WATCHDOG=1 for 3 s, systemd kills the
    # daemon (SIGABRT) and starts it again (Restart=on-failure).
    box.wait_for(lambda: int(box.show("wodmail.service", "NRestarts")) > restarts,
                 "the watchdog's restart")
    _wait_active(box)
    assert box.show("wodmail.service", "MainPID") != old
    log = box.run("journalctl", "-u", "wodmail", "--no-pager").stdout
    assert "Watchdog timeout" in log, log[-3000:]
    assert box.run("test", "-f", MARKER, check=False).returncode == 0  # it did stall
    # The new daemon resumes the order it found running: the hook runs again (no stall
    # this time) and the CREATE ends done, its first attempt recorded as interrupted.
    box.wait_for(lambda: _job(box, job).get("state") in ("done", "failed"), f"job {job}")
    shown = _job(box, job)
    assert shown["state"] == "done", shown
    attempts = [(entry["trigger"], entry["outcome"]) for entry in shown["attempt_log"]]
    assert attempts == [("received", "interrupted"), ("restart", "done")], shown["attempt_log"]
    assert box.run("test", "-f", f"/student/student3/{STALL}/0-ReadMeFirst.ipynb",
                   check=False).returncode == 0
    box.run("rm", "-r", "/run/systemd/system/wodmail.service.d")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "restart", "wodmail.service")
    _wait_active(box)


def test_the_sandbox_is_in_force(box):
    _wait_active(box)
    pid = box.show("wodmail.service", "MainPID")
    status = dict(line.split(":\t", 1) for line in
                  box.run("cat", f"/proc/{pid}/status").stdout.splitlines() if ":\t" in line)
    kept = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
            "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7,
            "CAP_AUDIT_WRITE": 29}
    mask = sum(1 << bit for bit in kept.values())
    assert int(status["CapBnd"], 16) == mask, status["CapBnd"]
    assert int(status["CapEff"], 16) == mask, status["CapEff"]
    assert status["NoNewPrivs"].strip() == "0"  # NoNewPrivileges=no: sudo in hooks works
    # In the service's own mount namespace: what it may write, and what it may not.
    inside = ["nsenter", "-t", pid, "-m"]

    def writable(path: str) -> bool:
        return box.run(*inside, "sh", "-c", f"touch {path}/.wodmail-probe && "
                       f"rm {path}/.wodmail-probe", check=False).returncode == 0

    for path in ("/root", "/usr", "/opt", "/var/log"):
        assert not writable(path), f"{path} is writable for wodmail"
    for path in ("/etc", "/student", "/var/lib/wodmail", "/tmp"):
        assert writable(path), f"{path} is not writable for wodmail"
    security = box.run("systemd-analyze", "security", "--no-pager", "wodmail.service",
                       check=False).stdout
    match = re.search(r"Overall exposure level for wodmail.service: (\d+\.\d+)", security)
    assert match, security[-2000:]
    print(f"systemd-analyze security inside the container: {match.group(1)}")
    assert float(match.group(1)) <= 4.0, match.group(0)


def test_stop_ends_within_timeout_stop_sec(box):
    _wait_active(box)
    limit = int(box.show("wodmail.service", "TimeoutStopUSec").removesuffix("s"))
    started = time.monotonic()
    box.run("systemctl", "stop", "wodmail.socket", "wodmail.service")
    took = time.monotonic() - started
    assert _state(box)[0] in ("inactive", "failed")
    assert box.show("wodmail.service", "Result") == "success"
    assert took < limit, took
    print(f"systemctl stop took {took:.1f} s")


def _journal(box: nspawn.Container) -> str:
    return box.run("journalctl", "-u", "wodmail", "-o", "cat", "--no-pager",
                   check=False).stdout[-3000:]
