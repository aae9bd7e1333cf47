"""The appliance fixture itself (tests/support/appliances.py): real sshd appliances on
loopback that the OpenSSH client reaches as WoD's backend does, each its own host, and the
host's own accounts untouched."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from support.appliances import Appliance, ApplianceFactory, KeyPair, make_keypair

LIMIT = 120.0
HOST_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow")


def _ssh(appliance: Appliance, key: KeyPair, command: str, user: str | None = None,
         known_hosts: Path | None = None,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*appliance.ssh_argv(key, user, known_hosts), command],
                          capture_output=True, text=True, timeout=LIMIT, input=input)


def _known_hosts(tmp_path: Path, *appliances: Appliance) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"{a.known_hosts_line()}\n" for a in appliances))
    return path


def _host_entries(names: set[str]) -> dict[str, list[str]]:
    """The host's account lines for `names` (other test sessions on this machine may add
    and remove throwaway users of their own meanwhile: only these lines are compared)."""
    return {path: [line for line in Path(path).read_text().splitlines()
                   if line.split(":")[0] in names] for path in HOST_FILES}


def test_the_admin_reaches_the_appliance_by_key_with_its_host_key_pinned_and_sudo(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    names = {"wodadmin", "docker", *(f"student{n}" for n in range(1, 6))}
    host_before = _host_entries(names)
    appliance = appliance_factory()
    print(f"appliance started in {appliance.start_seconds:.2f} s")
    pinned = _known_hosts(tmp_path, appliance)

    done = _ssh(appliance, admin_keypair, "hostname; id -un; sudo -n true && echo sudo-ok",
                known_hosts=pinned)

    assert done.returncode == 0, done.stderr + appliance.log
    assert done.stdout.split() == [appliance.hostname, "wodadmin", "sudo-ok"]
    assert appliance.host_key_fingerprint.startswith("SHA256:")
    fingerprints = subprocess.run(["ssh-keygen", "-lf", str(pinned)], capture_output=True,
                                  text=True, check=True).stdout
    assert appliance.host_key_fingerprint in fingerprints
    assert "Accepted publickey for wodadmin from 127.0.0.1" in appliance.log
    assert _host_entries(names) == host_before, "the host's own account files changed"


def test_students_are_there_as_the_setup_playbooks_leave_them(
        appliance_factory: ApplianceFactory) -> None:
    appliance = appliance_factory(students=range(3, 6), uid_base=3000,
                                  htpasswd_files=("/etc/httpd/conf/htpasswd",))

    entry = appliance.run("getent", "passwd", "student4").stdout.strip()
    assert entry == "student4:x:3004:3004:student4:/student/student4:/bin/bash"
    assert appliance.run("getent", "passwd", "student6", check=False).returncode == 2
    assert appliance.shadow("student4") == "!"
    assert appliance.run("stat", "-c", "%U %a", "/student/student4").stdout.split() == [
        "student4", "750"]
    assert appliance.exists("/student/student4/.bashrc")
    assert appliance.run("id", "-un", user="student4").stdout.strip() == "student4"
    assert appliance.run("stat", "-c", "%a", "/etc/httpd/conf/htpasswd").stdout.strip() == "600"


def test_the_stock_create_appliance_steps_work_over_ssh(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    """What create-appliance.sh and create-WKSHP-Ansible101.sh run on an appliance: scp, a
    password through `sudo chpasswd`, `sudo su - studentN -c`, `sudo install`, htpasswd.
    Then the student logs in with that password."""
    appliance = appliance_factory(htpasswd_files=("/etc/httpd/conf/htpasswd",),
                                  skel={".wod-skel": "from skel\n"})
    student_key = make_keypair(tmp_path / "student-key", "id_rsa", "rsa", "student2@backend")
    scp = subprocess.run(["scp", *appliance.ssh_argv(admin_keypair)[1:-1],
                          str(student_key.public_path),
                          f"wodadmin@{appliance.address}:/tmp/id_rsa.pub"],
                         capture_output=True, text=True, timeout=LIMIT)
    assert scp.returncode == 0, scp.stderr
    password = "Pw-Of-Student2"
    script = (
        "set -e; echo student2:$(cat) | sudo chpasswd\n"
        "sudo su - student2 -c 'rm -rf ~/.??* ~/*; rsync -a /etc/skel/ ~/'\n"
        "sudo install -d -m 0700 -o student2 -g student2 /student/student2/.ssh\n"
        "sudo install -m 0600 -o student2 -g student2 /tmp/id_rsa.pub"
        " /student/student2/.ssh/authorized_keys\n"
        "sudo htpasswd -b /etc/httpd/conf/htpasswd student2 Web-Pw 2>/dev/null\n"
    )
    done = _ssh(appliance, admin_keypair, script, input=password)
    assert done.returncode == 0, done.stderr

    assert appliance.password_ok("student2", password)
    assert not appliance.password_ok("student2", "another")
    assert appliance.htpasswd_ok("/etc/httpd/conf/htpasswd", "student2", "Web-Pw")
    assert appliance.read("/student/student2/.wod-skel") == "from skel\n"
    by_key = _ssh(appliance, student_key, "id -un", user="student2")
    assert by_key.stdout.strip() == "student2", by_key.stderr
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    by_password = subprocess.run(
        ["ssh", "-F", "none", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "StrictHostKeyChecking=no", "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1",
         f"student2@{appliance.address}", "id -un"],
        capture_output=True, text=True, timeout=LIMIT, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "SSH_ASKPASS": str(askpass),
             "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": "none"})
    assert by_password.stdout.strip() == "student2", by_password.stderr + appliance.log


def test_two_appliances_are_two_hosts(appliance_factory: ApplianceFactory) -> None:
    first = appliance_factory()
    second = appliance_factory(students=range(1, 3))

    assert first.address != second.address
    assert first.run("hostname").stdout != second.run("hostname").stdout
    assert first.host_public_key != second.host_public_key
    first.run("touch", "/tmp/only-on-first")
    assert not second.exists("/tmp/only-on-first")
    assert second.run("getent", "passwd", "student5", check=False).returncode == 2
    # Each sees its own processes only: its sshd as PID 1.
    assert first.run("ps", "-o", "args=", "-p", "1").stdout.startswith("sshd")
    assert not any("only-on-first" in line for line in second.processes())


def test_an_appliance_down_then_back_keeps_its_host_key_and_files(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory()
    pinned = _known_hosts(tmp_path, appliance)
    appliance.run("install", "-o", "student1", "/dev/null", "/student/student1/kept")
    key = appliance.host_public_key

    appliance.stop()
    down = _ssh(appliance, admin_keypair, "true", known_hosts=pinned)
    assert down.returncode == 255 and "refused" in down.stderr, down.stderr
    appliance.start()

    assert appliance.host_public_key == key
    assert appliance.exists("/student/student1/kept")
    assert _ssh(appliance, admin_keypair, "true", known_hosts=pinned).returncode == 0


def test_a_changed_host_key_is_refused_by_a_pinning_client(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory()
    pinned = _known_hosts(tmp_path, appliance)
    old = appliance.host_key_fingerprint

    appliance.regenerate_host_key()

    assert appliance.host_key_fingerprint != old
    done = _ssh(appliance, admin_keypair, "true", known_hosts=pinned)
    assert done.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr


def test_broken_sudo_asks_for_a_password(appliance_factory: ApplianceFactory,
                                         admin_keypair: KeyPair) -> None:
    appliance = appliance_factory()
    appliance.break_sudo()
    done = _ssh(appliance, admin_keypair, "sudo -n true")
    assert done.returncode == 1 and "a password is required" in done.stderr
    appliance.restore_sudo()
    assert _ssh(appliance, admin_keypair, "sudo -n true").returncode == 0


def test_nothing_of_a_closed_appliance_is_left(appliance_factory: ApplianceFactory) -> None:
    appliance = appliance_factory()
    appliance.run("sh", "-c", "sleep 987654 >/dev/null 2>&1 &")
    pid, merged = appliance.pid, str(appliance.folder / "merged")

    appliance.close()

    # Killed processes may linger a moment as zombies until their new parent reaps them.
    _wait(lambda: not Path(f"/proc/{pid}").exists(), "the appliance's PID 1 gone")
    assert merged not in Path("/proc/mounts").read_text()
    _wait(lambda: subprocess.run(["pgrep", "-f", "sleep 987654"]).returncode == 1,
          "the appliance's processes gone")
    _wait(lambda: not _answers(appliance.address), "port 22 closed")


def _answers(address: str) -> bool:
    try:
        socket.create_connection((address, 22), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"waited {LIMIT} s for {what}"
        time.sleep(0.1)
