"""The mono-appliance workshops (Ansible101, StackStorm101) through whole orders over SMTP,
against a real sshd appliance: the end state on the appliance and in the backend home after
CREATE, RESET, CLEANUP and PURGE, and no password in any command line on the appliance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.appliances import Appliance, ApplianceFactory, KeyPair
from support.workshop_orders import ArgvWatch, WorkshopBackend, workshop_backend
from wodmail.journal.jobs import Job, JobState

pytestmark = pytest.mark.skipif(os.getuid() != 0,
                                reason="root only: real appliances, chpasswd -R, chown")

ANSIBLE_HTPASSWD = "/etc/httpd/conf/htpasswd"
ST2_HTPASSWD = "/etc/st2/htpasswd"
HOME3 = "/student/student3"


def appliance_calls(job: Job) -> list[str]:
    return [hook["name"] for hook in job.result["hooks"] if hook["name"].startswith("appliance")]


async def create_watched(wb: WorkshopBackend, appliance: Appliance, student: int) -> Job:
    """CREATE while every argv on the appliance is watched for the order's password."""
    with ArgvWatch(appliance) as watch:
        job = await wb.order("CREATE", student)
    assert job.state is JobState.DONE, job.reason
    password = job.result["password"]
    # The watch matched nothing while it ran; it knows the password only now, so check
    # what it saw again: no line held it.
    assert watch.polls > 0
    assert not [line for line in watch.lines if password in line]
    return job


def assert_account_created(appliance: Appliance, wb: WorkshopBackend, job: Job) -> None:
    password = job.result["password"]
    assert appliance.password_ok("student3", password)
    backend_key = (wb.home(3) / ".ssh" / "id_rsa.pub").read_text().strip()
    assert appliance.read(f"{HOME3}/.ssh/authorized_keys").strip() == backend_key
    assert appliance.run("stat", "-c", "%a %U", f"{HOME3}/.ssh").stdout.split() == [
        "700", "student3"]
    assert not appliance.exists(f"{HOME3}/old-work")
    assert appliance.read(f"{HOME3}/.bashrc") == "# appliance skel\n"
    assert f"appliance {appliance.address}: sudo chpasswd" in appliance_calls(job)


async def test_ansible101_create_reset_cleanup_purge(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=range(1, 6), htpasswd_files=(ANSIBLE_HTPASSWD,),
                                  skel={".bashrc": "# appliance skel\n"})
    appliance.sh(f"echo leftover > {HOME3}/old-work && chown student3 {HOME3}/old-work")
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-Ansible101")
    try:
        created = await create_watched(wb, appliance, 3)
        password = created.result["password"]
        assert_account_created(appliance, wb, created)
        assert appliance.htpasswd_ok(ANSIBLE_HTPASSWD, "student3", password)
        assert "StrictHostKeyChecking accept-new" in appliance.read(f"{HOME3}/.ssh/config")
        backend_ssh = wb.home(3) / ".ssh"
        assert (backend_ssh / "authorized_keys").read_text() == (
            backend_ssh / "id_rsa.pub").read_text()
        assert (backend_ssh / "config").stat().st_mode & 0o777 == 0o600
        assert "StrictHostKeyChecking accept-new" in (backend_ssh / "config").read_text()

        cleanup = await wb.order("CLEANUP", 3)  # RESET waits for the customer's `cleaned`
        assert cleanup.state is JobState.DONE, cleanup.reason
        reset = await wb.order("RESET", 3)
        assert reset.state is JobState.DONE, reset.reason
        assert not appliance.password_ok("student3", password)
        assert not appliance.htpasswd_ok(ANSIBLE_HTPASSWD, "student3", password)
        assert not appliance.exists(f"{HOME3}/.ssh")
        assert appliance.run("ls", "-A", HOME3).stdout == ""

        for verb in ("CREATE", "CLEANUP", "PURGE"):
            job = await wb.order(verb, 4)
            assert job.state is JobState.DONE, (verb, job.reason)
    finally:
        await wb.stop()


async def test_stackstorm101_sets_the_st2_login_and_a_reset_changes_it(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=range(1, 6), htpasswd_files=(ST2_HTPASSWD,),
                                  skel={".bashrc": "# appliance skel\n"})
    appliance.sh(f"echo leftover > {HOME3}/old-work && chown student3 {HOME3}/old-work")
    wb = await workshop_backend(tmp_path, appliance, admin_keypair, "WKSHP-StackStorm101",
                                fields={"varpass": True})
    try:
        created = await create_watched(wb, appliance, 3)
        password = created.result["password"]
        assert_account_created(appliance, wb, created)
        assert appliance.htpasswd_ok(ST2_HTPASSWD, "student3", password)

        assert (await wb.order("CLEANUP", 3)).state is JobState.DONE
        reset = await wb.order("RESET", 3)
        assert reset.state is JobState.DONE, reset.reason
        assert not appliance.htpasswd_ok(ST2_HTPASSWD, "student3", password)
        assert not appliance.password_ok("student3", password)
        assert not appliance.exists(f"{HOME3}/.ssh")
    finally:
        await wb.stop()
