"""What handler modules do on an appliance: passwords through stdin only, files written at
once with their mode and owner, files and folders read back, commands as a student."""

from __future__ import annotations

import asyncio
import io
import tarfile

import pytest

from support.appliance_pool import Connect, eventually
from support.appliances import ApplianceFactory
from wodmail.errors import ApplianceCommandFailed, PeerUnavailable
from wodmail.logs import register_secret

PASSWORD = "Sesame-7f3c9d21"


async def test_a_password_goes_through_stdin_and_never_shows_in_any_process(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance)
    register_secret(PASSWORD)
    seen: list[str] = []

    # A command holding the password on its stdin a while, as chpasswd would.
    holding = asyncio.create_task(
        port.run("sh", "-c", "read x; sleep 5", sudo=True, input=f"student3:{PASSWORD}\n"))
    await eventually(lambda: _sleeping(appliance, seen), "the slow command running")
    while not holding.done():
        seen.extend(await asyncio.to_thread(appliance.processes))
    await holding
    await port.run("chpasswd", sudo=True, input=f"student3:{PASSWORD}\n")

    assert seen and not [line for line in seen if PASSWORD in line]
    assert any("sudo -n -- sh -c" in line for line in seen), seen
    assert appliance.shadow("student3").startswith("$")
    assert appliance.password_ok("student3", PASSWORD)
    assert port.calls[-1].name == f"appliance {appliance.address}: sudo chpasswd"


async def test_htpasswd_reads_the_password_from_stdin(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory(htpasswd_files=("/etc/httpd/conf/htpasswd",))
    _, port = connect_to(appliance)

    await port.run("htpasswd", "-i", "/etc/httpd/conf/htpasswd", "student2", sudo=True,
                   input=PASSWORD)

    assert appliance.htpasswd_ok("/etc/httpd/conf/htpasswd", "student2", PASSWORD)


async def test_write_file_replaces_the_file_at_once_with_its_mode_and_owner(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance)
    path = "/student/student2/.ssh/authorized_keys"
    appliance.run("install", "-d", "-m", "0700", "-o", "student2", "-g", "student2",
                  "/student/student2/.ssh")
    appliance.run("install", "-m", "0644", "/dev/null", path, input="")
    before = appliance.run("stat", "-c", "%i", path).stdout

    await port.write_file(path, "ssh-rsa AAAA student2@backend\n", mode=0o600,
                          owner="student2", group="student2", sudo=True)

    assert appliance.read(path) == "ssh-rsa AAAA student2@backend\n"
    assert appliance.run("stat", "-c", "%a %U %G", path).stdout.split() == [
        "600", "student2", "student2"]
    assert appliance.run("stat", "-c", "%i", path).stdout != before, "written in place"
    assert appliance.run("ls", "-A", "/student/student2/.ssh").stdout.split() == [
        "authorized_keys"], "a temp file was left"
    assert port.calls[-1].name == f"appliance {appliance.address}: sudo write {path}"


async def test_a_write_that_fails_leaves_the_old_file_and_no_temp_file(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance)
    path = "/student/student2/kept.txt"
    appliance.run("install", "-m", "0644", "/dev/stdin", path, input="old\n")

    with pytest.raises(ApplianceCommandFailed) as failed:
        await port.write_file(path, "new\n", owner="nosuchuser", sudo=True)

    assert "nosuchuser" in failed.value.output
    assert appliance.read(path) == "old\n"
    assert appliance.run("ls", "-A", "/student/student2").stdout.split().count("kept.txt") == 1
    assert not [name for name in appliance.run("ls", "-A", "/student/student2").stdout.split()
                if "wodmail" in name]


async def test_read_file_and_read_tar_give_back_what_is_there(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance)
    files = {"notes.txt": b"hello\n", "sub/data.bin": bytes(range(256)) * 40}
    await port.run("install", "-d", "-o", "student4", "-g", "student4",
                   "/student/student4/work", "/student/student4/work/sub", sudo=True)
    for name, data in files.items():
        await port.write_file(f"/student/student4/work/{name}", data, owner="student4",
                              sudo=True)

    assert await port.read_file("/student/student4/work/notes.txt", sudo=True) == b"hello\n"
    stream = await port.read_tar("/student/student4/work", user="student4")
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        read = {member.name.removeprefix("./"): archive.extractfile(member).read()
                for member in archive.getmembers() if member.isfile()}
        owners = {member.uname for member in archive.getmembers()}

    assert read == files
    assert owners == {"student4"}
    with pytest.raises(ApplianceCommandFailed, match="more than 100 bytes"):
        await port.read_file("/student/student4/work/sub/data.bin", sudo=True, max_bytes=100)


async def test_a_command_as_a_student_gets_its_login_environment(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance)

    done = await port.run("sh", "-c", 'id -un; echo "$HOME"; pwd; echo "$USER"',
                          user="student5")

    assert done.stdout.split() == ["student5", "/student/student5", "/student/student5",
                                   "student5"]
    assert port.calls[-1].name.startswith(f"appliance {appliance.address}: as student5: sh -c")


async def test_a_command_past_its_timeout_is_stopped(
        appliance_factory: ApplianceFactory, connect_to: Connect) -> None:
    appliance = appliance_factory()
    _, port = connect_to(appliance)

    with pytest.raises(PeerUnavailable, match="not finished within 1 s"):
        await port.run("sleep", "300", timeout=1)

    await eventually(lambda: not any(p.startswith("sleep 300") for p in appliance.processes()),
                     "the command stopped on the appliance")
    assert (await port.run("echo", "after")).stdout == "after\n"


def _sleeping(appliance, seen: list[str]) -> bool:
    processes = appliance.processes()
    seen.extend(processes)
    return any(p.startswith("sleep 5") for p in processes)
