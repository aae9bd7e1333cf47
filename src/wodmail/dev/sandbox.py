"""A whole WoD backend in a temp folder, for the README demo and the end-to-end tests.

Pre-made student homes, a sandbox accounts root (etc/passwd, etc/shadow, etc/group, where
the real `chpasswd -R` works when we are root), the sample workshop shipped with wodmail,
and stand-in portal and hub on loopback. Nothing outside `root` is touched, and no host
account is used: sandbox students have uids the host does not know (when root), or share
ours (when not, with Linux passwords off).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from wodmail.config import Config, parse_config
from wodmail.dev.standins import StandinHub, StandinPortal

SAMPLE_WORKSHOP = "WKSHP-Sample101"
UID_BASE = 62000
ADMIN_UID = 62999
HUB_TOKEN = "sandbox-hub-token"


def sample_dir() -> Path:
    return Path(str(resources.files("wodmail") / "sample"))


@dataclass
class Sandbox:
    root: Path
    students: range
    base_id: int
    portal: StandinPortal
    hub: StandinHub
    privileged: bool
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def students_dir(self) -> Path:
        return self.root / "student"

    @property
    def accounts_root(self) -> Path:
        return self.root / "accounts-root"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def uid(self, student: int) -> int:
        return UID_BASE + student if self.privileged else os.getuid()

    def home(self, student: int) -> Path:
        return self.students_dir / f"student{student}"

    def config_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "status": {"listen": None},  # off unless asked for
            "state_dir": str(self.root / "state"),
            "students": {"min": self.students.start, "max": self.students.stop - 1,
                         "base_id": self.base_id},
            "notebooks": {"public": str(self.notebooks)},
            "students_dir": str(self.students_dir),
            "portal": {"url": self.portal.url, "user": StandinPortal.MODERATOR_USER,
                       "password": StandinPortal.MODERATOR_PASSWORD},
            "hub": {"url": self.hub.root_url, "token": HUB_TOKEN},
            "accounts": {
                "root": str(self.accounts_root),
                "linux_passwords": self.privileged,
                "admin_user": "wodadmin",
                "skel": [str(self.root / "skel")],
                "kill_grace_seconds": 1,
            },
            # Hook scripts of tests live in private temp dirs the sandbox admin cannot enter.
            "scripts": {"run_as": ""},
            "group_vars": [str(self.root / "vars.yml")],
            "dispatch": {"retry_base_seconds": 0.05, "retry_max_seconds": 0.5,
                         "retry_deadline_seconds": 30, "cleaned_poll_seconds": 0.1},
        }
        _merge(data, self.overrides)
        return data

    def config(self, **overrides: Any) -> Config:
        data = self.config_data()
        _merge(data, overrides)
        return parse_config(data, "sandbox")

    def clear_calls(self) -> None:
        """Forgets what the stand-in portal and hub received so far."""
        self.portal.clear_calls()
        self.hub.clear_calls()

    def close(self) -> None:
        self.portal.stop()
        self.hub.stop()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _write_accounts(root: Path, students: range, privileged: bool) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True)
    gid = os.getgid()
    passwd = ["root:x:0:0:root:/root:/bin/sh"]
    shadow = ["root:*:19000:0:99999:7:::"]
    group = ["root:x:0:"]
    for n in students:
        uid = UID_BASE + n if privileged else os.getuid()
        sgid = UID_BASE + n if privileged else gid
        passwd.append(f"student{n}:x:{uid}:{sgid}::/student/student{n}:/bin/bash")
        shadow.append(f"student{n}:!:19000:0:99999:7:::")
        group.append(f"student{n}:x:{sgid}:")
    admin = ADMIN_UID if privileged else os.getuid()
    passwd.append(f"wodadmin:x:{admin}:{admin}::/home/wodadmin:/bin/bash")
    shadow.append("wodadmin:!:19000:0:99999:7:::")
    group.append(f"wodadmin:x:{admin}:")
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "shadow").write_text("\n".join(shadow) + "\n")
    (etc / "group").write_text("\n".join(group) + "\n")
    os.chmod(etc / "shadow", 0o600)


def make_sandbox(
    root: Path,
    *,
    students: range = range(1, 21),
    base_id: int = 0,
    portal_token_ttl: float = 180.0,
    workshop_fields: dict[str, Any] | None = None,
    privileged: bool | None = None,
) -> Sandbox:
    """Builds the sandbox under `root` and starts the stand-ins (call `close()` after)."""
    privileged = os.getuid() == 0 if privileged is None else privileged
    sample = sample_dir()
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(sample / "notebooks", root / "notebooks")
    shutil.copytree(sample / "skel", root / "skel")
    shutil.copy(sample / "vars.yml", root / "vars.yml")
    _write_accounts(root / "accounts-root", students, privileged)
    for n in students:
        home = root / "student" / f"student{n}"
        home.mkdir(parents=True)
        home.chmod(0o750)  # as the WoD installer makes them: closed to other students
        if privileged:
            os.chown(home, UID_BASE + n, UID_BASE + n)
    portal = StandinPortal(token_ttl=portal_token_ttl).start()
    portal.add_workshop(
        notebook=SAMPLE_WORKSHOP, name="Sample workshop", capacity=len(students),
        range=[students.start, students.stop - 1], **(workshop_fields or {}),
    )
    for n in students:
        portal.add_student(n + base_id, username=f"student{n}", assigned=True)
        portal.add_customer(n, notebook=SAMPLE_WORKSHOP, studentId=n + base_id,
                            email=f"participant{n}@example.com")
    hub = StandinHub(HUB_TOKEN, users=[f"student{n}" for n in students]).start()
    return Sandbox(root, students, base_id, portal, hub, privileged)
