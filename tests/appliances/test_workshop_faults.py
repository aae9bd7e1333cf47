"""Faults under the shipped workshop modules, against real appliances: each order ends
`failed` with a reason naming the appliance (or `done` after recovery), and what it left is
repaired by running it again (`wodmail retry`)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from support.appliances import ApplianceFactory, KeyPair
from support.workshop_orders import WorkshopBackend, workshop_backend
from wodmail import cli
from wodmail.journal.jobs import Job, JobState

pytestmark = pytest.mark.skipif(os.getuid() != 0,
                                reason="root only: real appliances, dockerd, chpasswd -R")

STUDENTS = range(401, 406)
N = 403


def hooks_tries(job: Job) -> int:
    step = next(step for step in job.result["steps"] if step["name"] == "hooks create")
    return 1 + int(step.get("retries", 0))


async def retried(wb: WorkshopBackend, job: Job, limit: float = 300) -> Job:
    """`wodmail retry ID`, then the job's next result."""
    assert cli.main(["retry", str(job.id), "--config", str(wb.config_file)]) == 0
    attempts = len(job.attempt_log)

    async def again() -> Job:
        while True:
            current = wb.wod.reader.get(job.id)  # type: ignore[union-attr]
            if len(current.attempt_log) > attempts and current.state in (
                    JobState.DONE, JobState.FAILED):
                return current
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(again(), limit)


async def test_a_changed_host_key_or_refused_sudo_fails_at_once_naming_the_appliance(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=STUDENTS,
                                  htpasswd_files=("/etc/httpd/conf/htpasswd",))
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-Ansible101",
                                students=STUDENTS)
    try:
        first = await wb.order("CREATE", 401)
        assert first.state is JobState.DONE, first.reason

        appliance.regenerate_host_key()
        changed = await wb.order("CREATE", 402)
        assert changed.state is JobState.FAILED
        assert f"appliance {appliance.address}: host key changed" in changed.reason
        assert appliance.host_key_fingerprint in changed.reason
        assert hooks_tries(changed) == 1  # not retried: an admin must look

        assert cli.main(["appliance", "forget", appliance.address,
                         "--config", str(wb.config_file)]) == 0
        appliance.break_sudo()
        refused = await wb.order("CREATE", N)
        assert refused.state is JobState.FAILED
        assert f"appliance {appliance.address}" in refused.reason
        assert "wodadmin" in refused.reason and hooks_tries(refused) == 1

        appliance.restore_sudo()
        repaired = await retried(wb, refused)
        assert repaired.state is JobState.DONE, repaired.reason
        assert appliance.password_ok(f"student{N}", repaired.result["password"])
    finally:
        await wb.stop()


async def test_a_container_that_never_serves_its_port_fails_then_a_retry_builds_it_anew(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=STUDENTS, docker=True, compose=("v2",))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    http_port = base + N - STUDENTS.start
    ports = {"HTTPPORT-WKSHP-Spark101": base, "SPARKPORT-WKSHP-Spark101": base + 100,
             "SPARKPORT2-WKSHP-Spark101": base + 200}
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-Spark101",
                                students=STUDENTS, variables=ports,
                                appliance_options={"ready_seconds": 8})
    squatter = socket.create_server(("0.0.0.0", http_port))  # Jupyter moves to the next port
    try:
        failed = await wb.order("CREATE", N)
        assert failed.state is JobState.FAILED
        assert f"appliance {appliance.address}" in failed.reason
        assert f"no Jupyter server with a token on port {http_port}" in failed.reason
        assert f"listens on [{http_port + 1}] instead" in failed.reason

        squatter.close()
        repaired = await retried(wb, failed)
        assert repaired.state is JobState.DONE, repaired.reason
        names = appliance.run("docker", "ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert names == [f"sparklab{N}-sparklab{N}-1"]  # the failed try's container is gone
    finally:
        squatter.close()
        await wb.stop()


async def test_a_compose_build_that_fails_names_the_appliance_and_leaves_no_container(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    """Student 3's uid is `sys` in the image: the stock Dockerfile's `useradd -u 3` fails the
    build, as it would with the stock scripts."""
    appliance = appliance_factory(students=range(1, 6), docker=True, compose=("v2",))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    ports = {"HTTPPORT-WKSHP-ML101": base, "MLPORT-WKSHP-ML101": base + 100,
             "MLPORT2-WKSHP-ML101": base + 200}
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-ML101",
                                variables=ports)
    try:
        failed = await wb.order("CREATE", 3)
        assert failed.state is JobState.FAILED
        assert failed.reason.startswith("hooks create: module wodmail.workshops.ml101:create: "
                                        f"appliance {appliance.address}: as student3:")
        shown = "".join(hook.get("output", "") for hook in failed.result["hooks"])
        assert "useradd: UID 3 is not unique" in shown
        assert appliance.run("docker", "ps", "-aq").stdout == ""
    finally:
        await wb.stop()
