"""More shapes of appliance workshops through whole orders against real appliances:
multi-appliance (each student on an appliance of their own, a range RESET visiting each),
Concourse101 (a two-service compose project) and Podman101 (the ssh entry the stock script
wrote but never installed)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.appliances import Appliance, ApplianceFactory, KeyPair
from support.docker_engine import privileged_missing
from support.workshop_orders import workshop_backend
from wodmail.journal.jobs import JobState

pytestmark = pytest.mark.skipif(os.getuid() != 0,
                                reason="root only: real appliances, dockerd, chpasswd -R")

HTPASSWD = "/etc/httpd/conf/htpasswd"


def consecutive_appliances(factory: Callable[..., Appliance], **options: object
                           ) -> tuple[Appliance, Appliance]:
    """Two appliances on 127.0.1.X and 127.0.1.X+1 (a multi-appliance range)."""
    for last in range(200, 250, 2):
        try:
            first = factory(address=f"127.0.1.{last}", **options)
        except AssertionError:
            continue
        try:
            return first, factory(address=f"127.0.1.{last + 1}", **options)
        except AssertionError:
            first.stop()
    raise AssertionError("no two consecutive free appliance addresses")


async def test_multi_appliance_students_get_their_own_appliance_and_a_range_reset_visits_each(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    first, second = consecutive_appliances(appliance_factory, students=range(1, 3),
                                           htpasswd_files=(HTPASSWD,))
    wb = await workshop_backend(tmp_path, first, admin_keypair, "WKSHP-Ansible101",
                                students=range(1, 3),
                                fields={"multiappliance": True, "monoappliance": False})
    try:
        one = await wb.order("CREATE", 1)
        two = await wb.order("CREATE", 2)
        assert one.state is two.state is JobState.DONE, (one.reason, two.reason)
        assert first.password_ok("student1", one.result["password"])
        assert second.password_ok("student2", two.result["password"])
        assert not second.exists("/student/student1/.ssh")  # student 1 is on the first only
        for n in (1, 2):
            assert (await wb.order("CLEANUP", n)).state is JobState.DONE

        reset = await wb.order("RESET", "1,2")
        assert reset.state is JobState.DONE, reset.reason
        assert not first.password_ok("student1", one.result["password"])
        assert not second.password_ok("student2", two.result["password"])
        assert not first.exists("/student/student1/.ssh")
        assert not second.exists("/student/student2/.ssh")
        visited = [hook["name"] for hook in reset.result["hooks"]
                   if hook["name"].endswith("sudo chpasswd")]
        assert visited == [f"appliance {first.address}: sudo chpasswd",
                           f"appliance {second.address}: sudo chpasswd"]
    finally:
        await wb.stop()


async def test_concourse101_runs_the_students_concourse_and_its_database(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=range(401, 406), docker=True, compose=("v1",))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    options = {"privileged_containers": False} if privileged_missing() else {}
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-Concourse101",
                                students=range(401, 406), appliance_options=options,
                                variables={"HTTPPORT-WKSHP-Concourse101": base})
    try:
        created = await wb.order("CREATE", 403)
        assert created.state is JobState.DONE, created.reason
        async with httpx.AsyncClient(timeout=30) as client:
            info = await client.get(f"http://127.0.0.1:{base + 2}/api/v1/info")
        assert info.status_code == 200
        names = appliance.run("docker", "ps", "--format", "{{.Names}}").stdout.split()
        assert sorted(names) == ["concourselab403_concourse_1",
                                 "concourselab403_concourselab-db-403_1"]
        password = created.result["password"]
        env_file = "/tmp/concourselab.403/.env.concourse"
        assert appliance.run("stat", "-c", "%a", env_file).stdout.strip() == "600"
        assert password not in appliance.read("/tmp/concourselab.403/docker-compose.yml")

        assert (await wb.order("CLEANUP", 403)).state is JobState.DONE
        reset = await wb.order("RESET", 403)
        assert reset.state is JobState.DONE, reset.reason
        assert appliance.run("docker", "ps", "-aq").stdout == ""
    finally:
        await wb.stop()


async def test_podman101_installs_the_ssh_entry_the_stock_script_left_in_a_scratch_file(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=range(1, 6))
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-Podman101",
                                variables={"HTTPPORT-WKSHP-Podman101": 19000,
                                           "SSHPORT-WKSHP-Podman101": 2222})
    try:
        created = await wb.order("CREATE", 3)
        assert created.state is JobState.DONE, created.reason
        config = (wb.home(3) / ".ssh" / "config").read_text()
        assert f"Host {appliance.address}\n    Port 2222\n" in config
        assert appliance.password_ok("student3", created.result["password"])
        assert (await wb.order("CLEANUP", 3)).state is JobState.DONE
        reset = await wb.order("RESET", 3)
        assert reset.state is JobState.DONE, reset.reason  # podman missing here: best effort
        assert not appliance.password_ok("student3", created.result["password"])
    finally:
        await wb.stop()
