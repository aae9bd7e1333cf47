"""The stock appliance scripts against the handler modules that replace them: the same
orders, over SMTP, against two identical fresh appliances, one backend running the stock
scripts (re-created as wod-backend's installer rendered them: support.stock_appliance_scripts,
through `hooks.use_scripts`, as WODUSER: support.stock_backend), the other the module; then
the end states a participant or an admin would notice, compared aspect by aspect.

Every aspect where the two differ must be listed in the case's expected differences, with
the stock value, the module's and why (an upstream defect the module mends, a deliberate
change, or what the test engine imposes); any other difference fails the test, naming the
aspect.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support import stock_backend as stock
from support.appliances import Appliance, ApplianceFactory, KeyPair
from support.reaper import ReapedCgroup
from support.stock_appliance_scripts import FIXED_HASH
from support.user_ansible import AnsibleForUser, Unavailable
from support.workshop_orders import ArgvWatch, WorkshopBackend, free_bases, workshop_backend
from wodmail.dev.sandbox import ADMIN_UID
from wodmail.host.studentvars import StudentVars
from wodmail.journal.jobs import Job, JobState

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="root only: real appliances, chpasswd -R, a mount namespace, sudo")

SKEL = {".bashrc": "# appliance skel\n"}
NO_CHECK_CONFIG = "Host *\n    StrictHostKeyChecking no\n"
ACCEPT_NEW_CONFIG = "Host *\n    StrictHostKeyChecking accept-new\n"
LEFTOVER = "sleep 3600"  # the previous participant's process

State = dict[str, Any]
Expected = dict[str, dict[str, tuple[Any, Any, str]]]  # verb -> aspect -> (stock, module, why)


@dataclass(frozen=True)
class Case:
    workshop: str
    expected: Expected
    student: int = 3
    students: range = range(1, 6)
    htpasswd: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    appliance: dict[str, Any] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    """Base port keys (group_vars): each side gets free ones, compared as offsets."""

    @property
    def user(self) -> str:
        return f"student{self.student}"


ARGV_DEFECT = ("the stock scripts put the password in command lines on the appliance "
               "(`echo studentN:PW | sudo chpasswd`, `htpasswd -b ... PW`) that any user "
               "there can read with ps; the module sends it on stdin")
PROCESSES = ("the module ends the previous participant's processes on the appliance "
             "before handing the account over; create-appliance.sh left them running")
V1_NAMES = ("the stock scripts find the container by compose v1's name (`sparklab403_"
            "sparklab403_1`); compose v2 names it `sparklab403-sparklab403-1`")

ANSIBLE101 = Case("WKSHP-Ansible101", htpasswd="/etc/httpd/conf/htpasswd", expected={
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

STACKSTORM101 = Case("WKSHP-StackStorm101", htpasswd="/etc/st2/htpasswd",
                     fields={"varpass": True}, expected={
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

SPARK101 = Case(
    "WKSHP-Spark101", student=403, students=range(401, 406),
    appliance={"docker": True, "compose": ("v2",)},
    ports=("HTTPPORT-WKSHP-Spark101", "SPARKPORT-WKSHP-Spark101",
           "SPARKPORT2-WKSHP-Spark101"),
    expected={
        "CREATE": {
            "password in a command line on the appliance": (True, False, ARGV_DEFECT),
            "previous participant's processes running": (True, False, PROCESSES),
            "container network": (
                {"mode": "sparklab403_default", "published": {
                    "4040/tcp": "SPARKPORT-WKSHP-Spark101+2",
                    "4041/tcp": "SPARKPORT2-WKSHP-Spark101+2",
                    "8888/tcp": "HTTPPORT-WKSHP-Spark101+2"}},
                {"mode": "host", "published": {}},
                "the test engine has no bridge of its own: the module runs with "
                "`appliances.container_network: host` (its server listens on HTTPPORT "
                "itself), the unchanged stock compose file gets a project network and "
                "publishes its ports"),
            "container account takes the order's password": (
                False, True,
                "the module sets the student's password in the container with chpasswd; the "
                "stock Dockerfile meant one fixed hash for every student"),
            "container account hash": (
                "not a crypt hash", "a crypt hash",
                "upstream defect: the stock Dockerfile's `RUN perl ... \\$6\\$salt\\$hash` "
                "runs in sh, which expands $6, $salt and $hash as empty variables: the "
                "account's hash is the hash's tail, which no password matches"),
        },
        "CLEANUP": {
            "completion": (0, 75, V1_NAMES + ": cleanup-container-ratio.sh copies nothing "
                           "back, and the ratio is that of the untouched notebooks"),
        },
        "RESET": {
            "password in a command line on the appliance": (True, False, ARGV_DEFECT),
            "project image on the engine": (
                True, False,
                "reset-WKSHP-Spark101.sh runs `compose down` (its version test is broken: it "
                "sets DOOCKERVER and reads DOCKERVER, so v2's `docker compose` always runs) "
                "without removing the image; the module removes it"),
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


def leftover_running(appliance: Appliance, user: str) -> bool:
    return appliance.run("pgrep", "-u", user, "-f", LEFTOVER, check=False).returncode == 0


def account_after_create(case: Case, appliance: Appliance, wb: WorkshopBackend, job: Job,
                         shadow_before: str, argv: set[str]) -> State:
    password, user = job.result["password"], case.user
    home = appliance.home(case.student)
    backend_ssh = wb.home(case.student) / ".ssh"
    backend_key = (backend_ssh / "id_rsa.pub").read_text().strip()
    remote_config = f"{home}/.ssh/config"
    return {
        "password in a command line on the appliance": any(password in line for line in argv),
        "appliance password is the order's": appliance.password_ok(user, password),
        "appliance shadow entry changed": appliance.shadow(user) != shadow_before,
        "previous participant's processes running": leftover_running(appliance, user),
        "appliance home": sorted(appliance.run("ls", "-A", home).stdout.split()),
        "appliance ~/.bashrc is the appliance's skel": appliance.read(f"{home}/.bashrc")
        == SKEL[".bashrc"],
        "appliance ~/.ssh modes and owners": tree(appliance, f"{home}/.ssh"),
        "appliance ~/.ssh/authorized_keys is the backend key":
            appliance.read(f"{home}/.ssh/authorized_keys").strip() == backend_key,
        "appliance ~/.ssh/config": appliance.read(remote_config)
        if appliance.exists(remote_config) else None,
        "htpasswd takes the order's password": case.htpasswd is not None
        and appliance.htpasswd_ok(case.htpasswd, user, password),
        "backend ~/.ssh modes and owners": backend_tree(backend_ssh),
        "backend ~/.ssh/authorized_keys": text(backend_ssh / "authorized_keys") and (
            "the student's own key"
            if text(backend_ssh / "authorized_keys").strip() == backend_key else "another"),
        "backend ~/.ssh/config": text(backend_ssh / "config"),
    }


def seen_live_password(case: Case, appliance: Appliance, argv: set[str]) -> bool:
    """Does a command line the watch saw hold the student's password now in force? RESET's
    password is told to no one, so the candidates are what followed `studentN:` in a line
    feeding chpasswd, each tried against the appliance's shadow file."""
    candidates = {found for line in argv if "chpasswd" in line
                  for found in re.findall(rf"{case.user}:([^\s'\"|]+)", line)}
    return any(appliance.password_ok(case.user, candidate) for candidate in candidates)


def account_after_reset(case: Case, appliance: Appliance, created: Job, shadow_before: str,
                        argv: set[str]) -> State:
    password, user = created.result["password"], case.user
    home = appliance.home(case.student)
    return {
        "password in a command line on the appliance": seen_live_password(case, appliance, argv),
        "appliance password is CREATE's": appliance.password_ok(user, password),
        "appliance shadow entry changed": appliance.shadow(user) != shadow_before,
        "appliance ~/.ssh": tree(appliance, f"{home}/.ssh"),
        "appliance home": sorted(appliance.run("ls", "-A", home).stdout.split()),
        "htpasswd takes CREATE's password": case.htpasswd is not None
        and appliance.htpasswd_ok(case.htpasswd, user, password),
    }


# -- containers (a Jupyter workshop) -----------------------------------------------------

CHECK_PASSWORD = ("import crypt, spwd, sys\n"
                  "h = spwd.getspnam(sys.argv[1]).sp_pwdp\n"
                  "sys.exit(0 if crypt.crypt(sys.stdin.read(), h) == h else 1)\n")
TOKEN_OPENS = ("import sys, urllib.request, urllib.error\n"
               "def status(query):\n"
               "    url = f'http://127.0.0.1:{sys.argv[1]}/api/status' + query\n"
               "    try:\n"
               "        return urllib.request.urlopen(url, timeout=10).status\n"
               "    except urllib.error.HTTPError as error:\n"
               "        return error.code\n"
               "sys.exit(0 if (status('?token=' + sys.argv[2]), status('')) == (200, 403)"
               " else 1)\n")


@dataclass(frozen=True)
class Ports:
    """A side's base ports: key -> base."""

    bases: dict[str, int]

    def offset(self, port: int) -> str:
        """`KEY+offset` of the base below `port` (bases are 5 apart)."""
        for key, base in self.bases.items():
            if 0 <= port - base < 5:
                return f"{key}+{port - base}"
        return str(port)


def container_names(appliance: Appliance) -> list[str]:
    return appliance.run("docker", "ps", "-a", "--format", "{{.Names}}").stdout.split()


def inspect(appliance: Appliance, name: str) -> dict[str, Any]:
    return json.loads(appliance.run("docker", "inspect", name).stdout)[0]


def in_container(appliance: Appliance, name: str, *argv: str, user: str | None = None,
                 input: str | None = None) -> bool:
    who = ["-u", user] if user else []
    return appliance.run("docker", "exec", "-i", *who, name, *argv, input=input,
                         check=False).returncode == 0


def token_opens(appliance: Appliance, name: str, port: object, token: object) -> bool:
    """Does the token open the Jupyter server of the container (from inside it), and is it
    needed (403 without)?"""
    return in_container(appliance, name, "python3", "-c", TOKEN_OPENS, str(port), str(token))


def container_after_create(case: Case, appliance: Appliance, job: Job, ports: Ports,
                           variables: dict[str, Any]) -> State:
    names = container_names(appliance)
    state: State = {"containers": names,
                    "per-student variables": sorted(variables)}
    if len(names) != 1:
        return state
    name, info = names[0], inspect(appliance, names[0])
    bound = info["HostConfig"]["PortBindings"] or {}
    shadow = appliance.run("docker", "exec", "-u", "root", name, "getent", "shadow",
                           case.user, check=False).stdout.split(":")
    hashed = shadow[1] if len(shadow) > 1 else ""
    return {
        **state,
        "container running": info["State"]["Running"],
        "container network": {
            "mode": info["HostConfig"]["NetworkMode"],
            "published": {inside: ports.offset(int(bindings[0]["HostPort"]))
                          for inside, bindings in bound.items()}},
        "HTTPPORT": ports.offset(int(variables.get("HTTPPORT", 0))),
        "SPARKPORT": ports.offset(int(variables.get("SPARKPORT", 0))),
        "the token opens the student's Jupyter": token_opens(
            appliance, name, variables.get("HTTPPORT"), variables.get("SPARKTOK")),
        "container account takes the order's password": in_container(
            appliance, name, "python3", "-W", "ignore", "-c", CHECK_PASSWORD, case.user,
            user="root", input=job.result["password"]),
        "container account hash": "a crypt hash" if hashed.startswith("$") else
        "the image's fixed hash" if hashed == FIXED_HASH else "not a crypt hash",
    }


def executed_notebook(cells: int, executed: int) -> str:
    code = [{"cell_type": "code", "execution_count": i + 1 if i < executed else None,
             "metadata": {}, "outputs": [], "source": "1"} for i in range(cells)]
    return json.dumps({"cells": code, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def work_in_container(appliance: Appliance, workdir: str) -> None:
    """The participant ran 3 of the 4 cells of the only notebook in their container."""
    [name] = container_names(appliance)
    appliance.run("docker", "exec", "-i", name, "sh", "-c",
                  f"cat > {workdir}/work.ipynb && rm -f {workdir}/[0-9]*.ipynb",
                  input=executed_notebook(4, 3))


def container_after_reset(case: Case, appliance: Appliance) -> State:
    image = f"sparklab{case.student}"
    return {
        "containers": container_names(appliance),
        "project image on the engine": bool(
            appliance.run("docker", "images", "-q", image).stdout.strip()),
        "project folder on the appliance": appliance.exists(f"/tmp/sparklab.{case.student}"),
    }


# -- one side's orders -------------------------------------------------------------------


@dataclass
class Side:
    name: str  # "stock" or "module"
    wb: WorkshopBackend
    appliance: Appliance
    ports: Ports
    variables: Callable[[], dict[str, Any]]
    """The student's per-student variables, as the side stored them."""


async def watched(side: Side, case: Case, verb: str) -> tuple[Job, set[str]]:
    with ArgvWatch(side.appliance) as watch:
        job = await side.wb.order(verb, case.student)
    assert job.state is JobState.DONE, (verb, job.reason, job.result.get("hooks"))
    assert watch.polls > 0
    assert_ran(job, side.name, case.workshop)
    return job, watch.lines


def assert_ran(job: Job, side: str, workshop: str) -> None:
    """The side's own hook ran: the stock script as WODUSER, or the module."""
    ran = {(hook["name"], hook["user"]) for hook in job.result["hooks"] if hook["ok"]}
    verb = job.verb.lower() if job.verb else ""
    module = f"module wodmail.workshops.{workshop.removeprefix('WKSHP-').lower()}:{verb}"
    if side == "stock":
        assert any(name.startswith("script ") and name.endswith(f"/{verb}-{workshop}.sh")
                   and user == stock.WODUSER for name, user in ran), ran
    else:
        assert (module, "") in ran, ran


async def run_side(side: Side, case: Case) -> dict[str, State]:
    """CREATE, CLEANUP, RESET of the case's student on a fresh appliance; the states after
    each."""
    appliance, user = side.appliance, case.user
    home = appliance.home(case.student)
    appliance.sh(f"echo leftover > {home}/old-work && chown {user} {home}/old-work")
    appliance.sh(f"setsid runuser -u {user} -- {LEFTOVER} </dev/null >/dev/null 2>&1 &")
    shadow = appliance.shadow(user)
    created, argv = await watched(side, case, "CREATE")
    states = {"CREATE": account_after_create(case, appliance, side.wb, created, shadow, argv)}
    if case.appliance.get("docker"):
        states["CREATE"] |= container_after_create(case, appliance, created, side.ports,
                                                   side.variables())
        work_in_container(appliance, str(side.wb.home(case.student)))
    cleanup = await side.wb.order("CLEANUP", case.student)  # RESET waits for `cleaned`
    assert cleanup.state is JobState.DONE, cleanup.reason
    states["CLEANUP"] = {"completion": cleanup.result.get("completion")}
    shadow = appliance.shadow(user)
    _, argv = await watched(side, case, "RESET")
    states["RESET"] = account_after_reset(case, appliance, created, shadow, argv)
    if case.appliance.get("docker"):
        states["RESET"] |= container_after_reset(case, appliance)
    return states


def free_ports(keys: tuple[str, ...]) -> Ports:
    """A base per key, each with 5 free ports after it on loopback."""
    return Ports(dict(zip(keys, free_bases(len(keys), 5), strict=True)))


async def both_sides(case: Case, factory: ApplianceFactory, key: KeyPair, tmp_path: Path,
                     request: pytest.FixtureRequest) -> tuple[dict[str, State], dict[str, State]]:
    """(stock states, module states), each side on a fresh appliance of the same spec."""
    spec = {"students": case.students, "skel": SKEL,
            "htpasswd_files": (case.htpasswd,) if case.htpasswd else (),
            "students_dir": stock.stock_students_dir(tmp_path / "stock"), **case.appliance}
    ansible = None
    if case.appliance.get("docker"):
        try:
            ansible = AnsibleForUser.make(ADMIN_UID, ADMIN_UID)
        except Unavailable as why:
            pytest.skip(str(why))
        request.addfinalizer(ansible.close)
    states = []
    for name in ("stock", "module"):
        appliance = factory(**spec)
        stock.prepare_appliance(appliance)
        ports = free_ports(case.ports)
        options = {"students": case.students, "fields": case.fields,
                   "variables": dict(ports.bases)}
        if name == "stock":
            backend = await stock.stock_backend(
                tmp_path / name, appliance, key, case.workshop, ansible=ansible,
                cgroups=request.getfixturevalue("appliance_cgroups"), **options)
            wb, stop = backend.orders, backend.stop
            host = backend.host

            def variables(host: stock.StockHost = host) -> dict[str, Any]:
                return host.student_vars(case.workshop, case.student)
        else:
            wb = await workshop_backend(tmp_path / name, appliance, key, case.workshop,
                                        **options)
            stop = wb.stop

            def variables(wb: WorkshopBackend = wb) -> dict[str, Any]:
                return StudentVars(wb.box.root / "state").load(case.student, case.workshop)
        try:
            states.append(await run_side(Side(name, wb, appliance, ports, variables), case))
        finally:
            await stop()
        if case.appliance.get("docker"):  # one engine for both sides: start the next clean
            request.getfixturevalue("docker_engine").reset()
    return states[0], states[1]


def assert_differences(case: Case, stock_states: dict[str, State],
                       module_states: dict[str, State]) -> None:
    for verb in stock_states:
        got, want = stock_states[verb], module_states[verb]
        assert got.keys() == want.keys(), verb
        differences = {aspect: (got[aspect], want[aspect]) for aspect in got
                       if got[aspect] != want[aspect]}
        expected = {aspect: (s, m) for aspect, (s, m, _) in case.expected.get(verb, {}).items()}
        assert differences == expected, (
            f"{case.workshop} after {verb}: the differences (stock, module) are not the "
            "expected ones")


@pytest.fixture
def stock_ready() -> None:
    why = stock.missing()
    if why is not None:
        pytest.skip(why)


@pytest.mark.usefixtures("stock_ready")
@pytest.mark.parametrize("case", [ANSIBLE101, STACKSTORM101, SPARK101],
                         ids=lambda case: case.workshop)
async def test_stock_scripts_and_module_differ_only_as_named(
        case: Case, appliance_factory: ApplianceFactory, admin_keypair: KeyPair,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    stock_states, module_states = await both_sides(case, appliance_factory, admin_keypair,
                                                   tmp_path, request)
    print(json.dumps({"stock": stock_states, "module": module_states}, indent=1))
    assert_differences(case, stock_states, module_states)


@pytest.mark.usefixtures("stock_ready")
async def test_stock_spark101_needs_compose_v2(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """Upstream defect: create-WKSHP-Spark101.sh launches with `docker compose` (v2) while
    its reset and ratio scripts name containers as v1 does; on an appliance with only v1
    its CREATE fails. The module works with either (test_workshops_containers)."""
    case = SPARK101
    appliance = appliance_factory(students=case.students, docker=True, compose=("v1",),
                                  students_dir=stock.stock_students_dir(tmp_path))
    stock.prepare_appliance(appliance)
    try:
        ansible = AnsibleForUser.make(ADMIN_UID, ADMIN_UID)
    except Unavailable as why:
        pytest.skip(str(why))
    request.addfinalizer(ansible.close)
    ports = free_ports(case.ports)
    backend = await stock.stock_backend(tmp_path, appliance, admin_keypair, case.workshop,
                                        ansible=ansible, students=case.students,
                                        variables=dict(ports.bases),
                                        cgroups=request.getfixturevalue("appliance_cgroups"))
    try:
        created = await backend.orders.order("CREATE", case.student)
    finally:
        await backend.stop()
    assert created.state is JobState.FAILED
    [script] = [hook for hook in created.result["hooks"] if hook["name"].startswith("script")]
    # The launch (`docker compose up --build -d` as the student) was the last command
    # traced: the v1-only docker CLI answered with its usage, and `set -e` ended the script.
    traced = [line for line in script["output"].splitlines() if line.startswith("+ ")]
    assert "launch-sparklab" in traced[-1]
    assert "Run 'docker COMMAND --help'" in script["output"]
    assert container_names(appliance) == []


DOCKER101_PORTS = ("HTTPPORT-WKSHP-Docker101", "SSHPORT-WKSHP-Docker101")


@pytest.mark.usefixtures("stock_ready")
@pytest.mark.parametrize("compose", ["v2", "v1"])
async def test_stock_docker101_reset_misses_a_compose_v2_container(
        compose: str, appliance_factory: ApplianceFactory, admin_keypair: KeyPair,
        tmp_path: Path, appliance_cgroups: ReapedCgroup) -> None:
    """reset-WKSHP-Docker101.sh stops and removes the container by compose v1's name: under
    v2 the previous participant's container (and its sshd, their key authorized) runs on
    after a RESET. The student's container is made by the module here: the stock create
    script's compose file asks for a privileged container and its entrypoint ends as
    dockerd, neither of which the test engine and its stand-in image can run."""
    from support.docker_engine import privileged_missing

    student, students = 403, range(401, 406)
    appliance = appliance_factory(students=students, docker=True, compose=(compose,),
                                  students_dir=stock.stock_students_dir(tmp_path / "stock"))
    stock.prepare_appliance(appliance)
    variables = dict(free_ports(DOCKER101_PORTS).bases)
    options: dict[str, Any] = {"students": students, "variables": variables}
    module = await workshop_backend(
        tmp_path / "module", appliance, admin_keypair, "WKSHP-Docker101", **options,
        appliance_options={"privileged_containers": False} if privileged_missing() else {})
    scripts = None
    try:
        created = await module.order("CREATE", student)
        assert created.state is JobState.DONE, created.reason
        [name] = container_names(appliance)
        assert name == (f"dockerlab{student}-dockerlab{student}-1" if compose == "v2"
                        else f"dockerlab{student}_dockerlab{student}_1")
        scripts = await stock.stock_backend(tmp_path / "stock", appliance, admin_keypair,
                                            "WKSHP-Docker101", cgroups=appliance_cgroups,
                                            **options)
        assert (await scripts.orders.order("CLEANUP", student)).state is JobState.DONE
        reset = await scripts.orders.order("RESET", student)
        assert reset.state is JobState.DONE, reset.reason
        assert_ran(reset, "stock", "WKSHP-Docker101")
        left = container_names(appliance)
        if compose == "v2":
            assert left == [name] and inspect(appliance, name)["State"]["Running"]
        else:
            assert left == []

        # The module's RESET finds the container through `compose ps`, whatever its name.
        assert (await module.order("CLEANUP", student)).state is JobState.DONE
        assert (await module.order("RESET", student)).state is JobState.DONE
        assert container_names(appliance) == []
    finally:
        if scripts is not None:
            await scripts.stop()
        await module.stop()
