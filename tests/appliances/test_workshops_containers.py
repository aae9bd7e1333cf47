"""The container workshops (Spark101 for the four Jupyter ones, Docker101) through whole
orders over SMTP, against a real sshd appliance running a real Docker engine with compose v1
or v2 (support.docker_engine; containers on the host network, as no bridge exists here):
the student's container, its token, its ratio at CLEANUP, its removal at RESET, and the
faults that must leave nothing a re-run does not repair."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from support.appliances import Appliance, ApplianceFactory, KeyPair
from support.docker_engine import privileged_missing
from support.workshop_orders import WorkshopBackend, free_bases, workshop_backend
from wodmail.host.studentvars import StudentVars
from wodmail.journal.jobs import Job, JobState

pytestmark = pytest.mark.skipif(os.getuid() != 0,
                                reason="root only: real appliances, dockerd, chpasswd -R")

SPARK = "WKSHP-Spark101"
# Students as a real event numbers them: the Jupyter images give student N the uid N, which
# must not be a system account of the image (uid 3 is `sys`), as with the stock scripts.
STUDENTS = range(401, 406)
N = 403
HOME = f"/student/student{N}"
CHECK_PASSWORD = ("import crypt, spwd, sys\n"
                  "h = spwd.getspnam(sys.argv[1]).sp_pwdp\n"
                  "sys.exit(0 if crypt.crypt(sys.stdin.read(), h) == h else 1)\n")


def free_base(span: int = 5) -> int:
    """A base port whose next `span` ports are free on loopback (host networking)."""
    return free_bases(1, span)[0]


def containers(appliance: Appliance) -> list[str]:
    return appliance.run("docker", "ps", "-a", "--format", "{{.Names}}").stdout.split()


def student_vars(wb: WorkshopBackend, student: int) -> dict[str, object]:
    return StudentVars(wb.box.root / "state").load(student, wb.workshop)


def executed_notebook(cells: int, executed: int) -> str:
    code = [{"cell_type": "code", "execution_count": i + 1 if i < executed else None,
             "metadata": {}, "outputs": [], "source": "1"} for i in range(cells)]
    return json.dumps({"cells": code, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def calls(job: Job) -> list[str]:
    return [hook["name"] for hook in job.result["hooks"] if hook["name"].startswith("appliance")]


@pytest.mark.parametrize("compose", ["v2", "v1"])
async def test_spark101_container_token_ratio_and_reset(
        compose: str, appliance_factory: ApplianceFactory, admin_keypair: KeyPair,
        tmp_path: Path) -> None:
    appliance = appliance_factory(students=STUDENTS, docker=True, compose=(compose,))
    base = free_base(15)
    ports = {"HTTPPORT-WKSHP-Spark101": base, "SPARKPORT-WKSHP-Spark101": base + 5,
             "SPARKPORT2-WKSHP-Spark101": base + 10}
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, SPARK, variables=ports,
                                students=STUDENTS)
    try:
        created = await wb.order("CREATE", N)
        assert created.state is JobState.DONE, created.reason
        values = student_vars(wb, N)
        http_port = base + 2  # the third student of the range
        assert values["HTTPPORT"] == http_port and values["SPARKPORT"] == base + 7
        token = str(values["SPARKTOK"])
        async with httpx.AsyncClient(timeout=30) as client:  # the notebooks' token opens it
            opened = await client.get(f"http://127.0.0.1:{http_port}/api/status",
                                      params={"token": token})
            refused = await client.get(f"http://127.0.0.1:{http_port}/api/status")
        assert (opened.status_code, refused.status_code) == (200, 403)
        name = f"sparklab{N}-sparklab{N}-1" if compose == "v2" else f"sparklab{N}_sparklab{N}_1"
        assert containers(appliance) == [name]
        # the container account has the order's password, not a hash shared by every image
        check = appliance.run("docker", "exec", "-i", "-u", "root", name, "python3", "-W",
                              "ignore", "-c", CHECK_PASSWORD, f"student{N}",
                              input=created.result["password"], check=False)
        assert check.returncode == 0
        assert token not in json.dumps(created.result["hooks"])  # masked in `wodmail show`

        # the participant runs 3 of the 4 cells of a notebook in the container, whose home
        # is at the backend's path, as the stock Dockerfile made it
        inside = str(wb.home(N))
        appliance.run("docker", "exec", "-i", name, "sh", "-c",
                      f"cat > {inside}/work.ipynb && rm -f {inside}/[0-9]*.ipynb",
                      input=executed_notebook(4, 3))
        cleanup = await wb.order("CLEANUP", N)
        assert cleanup.state is JobState.DONE, cleanup.reason
        assert cleanup.result["completion"] == 75
        assert wb.box.portal.customer(wb.customers[N])["completionPercentage"] == 75

        reset = await wb.order("RESET", N)
        assert reset.state is JobState.DONE, reset.reason
        assert containers(appliance) == []
        assert appliance.run("docker", "images", "-q", f"sparklab{N}").stdout == ""
        assert not appliance.exists(f"/tmp/sparklab.{N}")
        assert not appliance.exists(f"{HOME}/.ssh")
    finally:
        await wb.stop()


async def test_docker101_student_logs_in_to_their_container_with_their_backend_key(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=STUDENTS, docker=True, compose=("v2",))
    base = free_base(10)
    ports = {"HTTPPORT-WKSHP-Docker101": base, "SSHPORT-WKSHP-Docker101": base + 5}
    extra = {}
    if privileged_missing():  # this engine cannot start it; Docker-in-Docker is not tested
        extra = {"privileged_containers": False}
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-Docker101",
                                variables=ports, appliance_options=extra, students=STUDENTS)
    lab = wb.box.root / "notebooks" / "WKSHP-Docker101" / "lab.ipynb"
    lab.write_text('{"cells": ["http://{{ hostvars[inventory_hostname][\'IP-WKSHP-Docker101\'] '
                   '}}:{{ HTTPPORT }} student{{ STDID }}"]}')
    try:
        created = await wb.order("CREATE", N)
        assert created.state is JobState.DONE, created.reason
        ssh_port = base + 7
        assert student_vars(wb, N)["HTTPPORT"] == base + 2
        # the port the module set reaches the notebook deployed after it
        notebook = (wb.home(N) / "WKSHP-Docker101" / "lab.ipynb").read_text()
        assert f"http://{appliance.address}:{base + 2} student{N}" in notebook
        home = wb.home(N)
        config = (home / ".ssh" / "config").read_text()
        assert f"Host {appliance.address}\n" in config and f"    Port {ssh_port}\n" in config
        # the student's own key opens their container's sshd, as the notebooks do
        login = await asyncio.create_subprocess_exec(
            "ssh", "-F", "/dev/null", "-i", str(home / ".ssh" / "id_rsa"), "-p", str(ssh_port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", f"student{N}@127.0.0.1", "id -un; sudo -n true",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(login.communicate(), 60)
        assert login.returncode == 0, err
        assert out.decode().split()[0] == f"student{N}"
        assert containers(appliance) == [f"dockerlab{N}-dockerlab{N}-1"]

        assert (await wb.order("CLEANUP", N)).state is JobState.DONE
        reset = await wb.order("RESET", N)
        assert reset.state is JobState.DONE, reset.reason
        assert containers(appliance) == []  # found through compose ps: v2's name too
    finally:
        await wb.stop()
