"""The stock appliance scripts against the handler modules that replace them: the same
orders, over SMTP, against two identical fresh appliances, one backend running the stock
scripts (re-created as wod-backend's installer rendered them: support.stock_appliance_scripts,
through `hooks.use_scripts`, as WODUSER: support.stock_backend), the other the module; then
the end states a participant or an admin would notice, compared aspect by aspect.

Every aspect where the two differ must be listed in the workshop's expected differences,
with the stock value, the module's and why (an upstream defect the module mends, or a
deliberate change); any other difference fails the test, naming the aspect.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import stock_backend as stock
from support.appliances import Appliance, ApplianceFactory, KeyPair
from support.workshop_orders import ArgvWatch, WorkshopBackend, workshop_backend
from wodmail.journal.jobs import Job, JobState

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="root only: real appliances, chpasswd -R, a mount namespace, sudo")

STUDENT = 3
USER = f"student{STUDENT}"
ANSIBLE_HTPASSWD = "/etc/httpd/conf/htpasswd"
ST2_HTPASSWD = "/etc/st2/htpasswd"
SKEL = {".bashrc": "# appliance skel\n"}
NO_CHECK_CONFIG = "Host *\n    StrictHostKeyChecking no\n"
ACCEPT_NEW_CONFIG = "Host *\n    StrictHostKeyChecking accept-new\n"
LEFTOVER = "sleep 3600"  # the previous participant's process

State = dict[str, Any]


@dataclass(frozen=True)
class Workshop:
    name: str
    htpasswd: str
    fields: dict[str, Any]
    # aspect -> (stock value, module value, why they differ), per verb
    expected: dict[str, dict[str, tuple[Any, Any, str]]]


ARGV_DEFECT = ("the stock scripts put the password in command lines on the appliance "
               "(`echo student3:PW | sudo chpasswd`, `htpasswd -b ... PW`) that any user "
               "there can read with ps; the module sends it on stdin")
PROCESSES = ("the module ends the previous participant's processes on the appliance "
             "before handing the account over; create-appliance.sh left them running")

ANSIBLE101 = Workshop("WKSHP-Ansible101", ANSIBLE_HTPASSWD, {}, {
    "CREATE": {
        "password in a command line on the appliance": (True, False, ARGV_DEFECT),
        "previous participant's processes running": (True, False, PROCESSES),
        "appliance ~/.ssh/config": (
            NO_CHECK_CONFIG, ACCEPT_NEW_CONFIG,
            "deliberate: the student's ssh accepts a first contact and refuses a changed "
            "host key, where the stock config turned checking off"),
        "backend ~/.ssh/config": (NO_CHECK_CONFIG, ACCEPT_NEW_CONFIG, "the same, on the backend"),
    },
    "RESET": {
        "password in a command line on the appliance": (True, False, ARGV_DEFECT),
        "htpasswd takes CREATE's password": (
            True, False,
            "reset-WKSHP-Ansible101.sh left the web login (htpasswd) with the previous "
            "participant's password; the module gives it the new one"),
    },
})

STACKSTORM101 = Workshop("WKSHP-StackStorm101", ST2_HTPASSWD, {"varpass": True}, {
    "CREATE": {
        "password in a command line on the appliance": (
            True, False, ARGV_DEFECT + " (`echo PW | sudo htpasswd -i` too: the remote "
            "shell's command line holds it)"),
        "previous participant's processes running": (True, False, PROCESSES),
    },
    "RESET": {
        "password in a command line on the appliance": (True, False, ARGV_DEFECT),
    },
})


# -- the end state -----------------------------------------------------------------------


def tree(appliance: Appliance, folder: str) -> dict[str, str] | None:
    """`{relative path: "mode owner"}` of a folder on the appliance ("." is the folder)."""
    if not appliance.exists(folder):
        return None
    found = appliance.run("find", folder, "-printf", "%P\t%m %u\n").stdout
    return {(path or "."): info for path, info in
            (line.split("\t") for line in found.splitlines())}


def backend_tree(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    return {("." if path == folder else str(path.relative_to(folder))):
            f"{path.stat().st_mode & 0o7777:o} {path.stat().st_uid}"
            for path in (folder, *sorted(folder.rglob("*")))}


def text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def leftover_running(appliance: Appliance) -> bool:
    return appliance.run("pgrep", "-u", USER, "-f", LEFTOVER, check=False).returncode == 0


def after_create(appliance: Appliance, wb: WorkshopBackend, job: Job, shadow_before: str,
                 argv: set[str], htpasswd: str) -> State:
    password = job.result["password"]
    home = appliance.home(STUDENT)
    backend_ssh = wb.home(STUDENT) / ".ssh"
    backend_key = (backend_ssh / "id_rsa.pub").read_text().strip()
    remote_config = f"{home}/.ssh/config"
    return {
        "password in a command line on the appliance": any(password in line for line in argv),
        "appliance password is the order's": appliance.password_ok(USER, password),
        "appliance shadow entry changed": appliance.shadow(USER) != shadow_before,
        "previous participant's processes running": leftover_running(appliance),
        "appliance home": sorted(appliance.run("ls", "-A", home).stdout.split()),
        "appliance ~/.bashrc is the appliance's skel": appliance.read(f"{home}/.bashrc")
        == SKEL[".bashrc"],
        "appliance ~/.ssh modes and owners": tree(appliance, f"{home}/.ssh"),
        "appliance ~/.ssh/authorized_keys is the backend key":
            appliance.read(f"{home}/.ssh/authorized_keys").strip() == backend_key,
        "appliance ~/.ssh/config": appliance.read(remote_config)
        if appliance.exists(remote_config) else None,
        "htpasswd takes the order's password": appliance.htpasswd_ok(htpasswd, USER, password),
        "backend ~/.ssh modes and owners": backend_tree(backend_ssh),
        "backend ~/.ssh/authorized_keys": text(backend_ssh / "authorized_keys") and (
            "the student's own key"
            if text(backend_ssh / "authorized_keys").strip() == backend_key else "another"),
        "backend ~/.ssh/config": text(backend_ssh / "config"),
    }


def seen_live_password(appliance: Appliance, argv: set[str]) -> bool:
    """Does a command line the watch saw hold the student's password now in force? RESET's
    password is told to no one, so the candidates are what followed `student3:` in a line
    feeding chpasswd, each tried against the appliance's shadow file."""
    candidates = {found for line in argv if "chpasswd" in line
                  for found in re.findall(rf"{USER}:([^\s'\"|]+)", line)}
    return any(appliance.password_ok(USER, candidate) for candidate in candidates)


def after_reset(appliance: Appliance, created: Job, shadow_before: str, argv: set[str],
                htpasswd: str) -> State:
    password = created.result["password"]
    home = appliance.home(STUDENT)
    return {
        "password in a command line on the appliance": seen_live_password(appliance, argv),
        "appliance password is CREATE's": appliance.password_ok(USER, password),
        "appliance shadow entry changed": appliance.shadow(USER) != shadow_before,
        "appliance ~/.ssh": tree(appliance, f"{home}/.ssh"),
        "appliance home": sorted(appliance.run("ls", "-A", home).stdout.split()),
        "htpasswd takes CREATE's password": appliance.htpasswd_ok(htpasswd, USER, password),
    }


# -- one side's orders -------------------------------------------------------------------


async def watched(wb: WorkshopBackend, appliance: Appliance, verb: str) -> tuple[Job, set[str]]:
    with ArgvWatch(appliance) as watch:
        job = await wb.order(verb, STUDENT)
    assert job.state is JobState.DONE, (verb, job.reason, job.result.get("hooks"))
    assert watch.polls > 0
    return job, watch.lines


def assert_ran(job: Job, side: str, workshop: str) -> None:
    """The side's own hook ran: the stock script as WODUSER, or the module."""
    ran = {(hook["name"], hook["user"]) for hook in job.result["hooks"] if hook["ok"]}
    verb = job.verb.lower()
    module = f"module wodmail.workshops.{workshop.removeprefix('WKSHP-').lower()}:{verb}"
    if side == "stock":
        assert any(name.startswith("script ") and name.endswith(f"/{verb}-{workshop}.sh")
                   and user == stock.WODUSER for name, user in ran), ran
    else:
        assert (module, "") in ran, ran


async def run_side(side: str, wb: WorkshopBackend, appliance: Appliance, workshop: Workshop
                   ) -> dict[str, State]:
    """CREATE, CLEANUP, RESET of student 3 on a fresh appliance; the states after CREATE
    and after RESET."""
    home = appliance.home(STUDENT)
    appliance.sh(f"echo leftover > {home}/old-work && chown {USER} {home}/old-work")
    appliance.sh(f"setsid runuser -u {USER} -- {LEFTOVER} </dev/null >/dev/null 2>&1 &")
    shadow = appliance.shadow(USER)
    created, argv = await watched(wb, appliance, "CREATE")
    assert_ran(created, side, workshop.name)
    states = {"CREATE": after_create(appliance, wb, created, shadow, argv, workshop.htpasswd)}
    cleanup = await wb.order("CLEANUP", STUDENT)  # RESET waits for the customer's `cleaned`
    assert cleanup.state is JobState.DONE, cleanup.reason
    shadow = appliance.shadow(USER)
    reset, argv = await watched(wb, appliance, "RESET")
    assert_ran(reset, side, workshop.name)
    states["RESET"] = after_reset(appliance, created, shadow, argv, workshop.htpasswd)
    return states


async def both_sides(factory: ApplianceFactory, key: KeyPair, tmp_path: Path,
                     workshop: Workshop) -> tuple[dict[str, State], dict[str, State]]:
    """(stock states, module states), each side on a fresh appliance of the same spec."""
    students_dir = stock.stock_students_dir(tmp_path / "stock")
    spec = {"students": range(1, 6), "htpasswd_files": (workshop.htpasswd,), "skel": SKEL,
            "students_dir": students_dir}
    sides = []
    for side in ("stock", "module"):
        appliance = factory(**spec)
        stock.open_tmp(appliance)
        if side == "stock":
            backend = await stock.stock_backend(tmp_path / side, appliance, key,
                                                workshop.name, fields=workshop.fields)
            wb, stop = backend.orders, backend.stop
        else:
            wb = await workshop_backend(tmp_path / side, appliance, key, workshop.name,
                                        fields=workshop.fields)
            stop = wb.stop
        try:
            sides.append(await run_side(side, wb, appliance, workshop))
        finally:
            await stop()
    return sides[0], sides[1]


def assert_differences(workshop: Workshop, stock_states: dict[str, State],
                       module_states: dict[str, State]) -> None:
    for verb, expected in workshop.expected.items():
        got, want = stock_states[verb], module_states[verb]
        differences = {aspect: (got[aspect], want[aspect]) for aspect in got
                       if got[aspect] != want[aspect]}
        assert differences == {aspect: (s, m) for aspect, (s, m, _) in expected.items()}, (
            f"{workshop.name} after {verb}: unexpected differences (stock, module)")


@pytest.fixture
def stock_ready() -> None:
    why = stock.missing()
    if why is not None:
        pytest.skip(why)


@pytest.mark.usefixtures("stock_ready")
async def test_ansible101_stock_and_module_differ_only_as_named(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    stock_states, module_states = await both_sides(appliance_factory, admin_keypair, tmp_path,
                                                   ANSIBLE101)
    assert_differences(ANSIBLE101, stock_states, module_states)


@pytest.mark.usefixtures("stock_ready")
async def test_stackstorm101_stock_and_module_differ_only_as_named(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    stock_states, module_states = await both_sides(appliance_factory, admin_keypair, tmp_path,
                                                   STACKSTORM101)
    assert_differences(STACKSTORM101, stock_states, module_states)
