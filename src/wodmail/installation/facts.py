"""The Ansible facts WoD templates and group_vars use, gathered in-process.

`copy_folder.yml` ran with `gather_facts: true` on the backend itself (connection local, as
the WoD user), so templates and installation values may use `{{ ansible_fqdn }}`,
`{{ ansible_env.HOME }}`, `{{ ansible_facts['distribution'] }}` ... wodmail provides the
facts below, computed the way Ansible's fact modules compute them; any other fact is an
undefined variable (listed by `wodmail render`):

- `fqdn` (socket.getfqdn()), `hostname`, `nodename`, `domain`;
- `env` (the WoD user's login environment: HOME, USER, LOGNAME, SHELL, PATH), `user_id`,
  `user_dir`, `user_shell`, `user_uid`, `user_gid`;
- `distribution`, `distribution_version`, `distribution_major_version`,
  `distribution_release`, `os_family`, `pkg_mgr` (from /etc/os-release);
- `system`, `kernel`, `architecture`, `machine`.

Each is a variable `ansible_<name>` and a key of `ansible_facts`.
"""

from __future__ import annotations

import os
import platform
import pwd
import shlex
import socket
from pathlib import Path
from typing import Any

from wodmail.userdb import UserDb

LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"

_DISTRIBUTIONS = {
    "ubuntu": "Ubuntu",
    "debian": "Debian",
    "rocky": "Rocky",
    "centos": "CentOS",
    "rhel": "RedHat",
    "almalinux": "AlmaLinux",
    "fedora": "Fedora",
    "ol": "OracleLinux",
    "opensuse-leap": "openSUSE Leap",
    "sles": "SLES",
}
_FAMILIES = {
    "Ubuntu": "Debian",
    "Debian": "Debian",
    "Rocky": "RedHat",
    "CentOS": "RedHat",
    "RedHat": "RedHat",
    "AlmaLinux": "RedHat",
    "Fedora": "RedHat",
    "OracleLinux": "RedHat",
    "openSUSE Leap": "Suse",
    "SLES": "Suse",
}


def gather_facts(user: str | None, accounts_root: Path, etc: Path = Path("/etc")) -> dict[str, Any]:
    """The facts as variables (`ansible_fqdn` ...) plus `ansible_facts` holding them all."""
    facts: dict[str, Any] = {}
    facts.update(_host_facts())
    facts.update(_user_facts(user, accounts_root))
    facts.update(_distribution_facts(etc))
    variables = {f"ansible_{name}": value for name, value in facts.items()}
    variables["ansible_facts"] = facts
    return variables


def _host_facts() -> dict[str, Any]:
    fqdn = socket.getfqdn()
    node = platform.node()
    uname = platform.uname()
    return {
        "fqdn": fqdn,
        "hostname": node.split(".")[0],
        "nodename": node,
        "domain": ".".join(fqdn.split(".")[1:]),
        "system": uname.system,
        "kernel": uname.release,
        "architecture": uname.machine,
        "machine": uname.machine,
    }


def _user_facts(user: str | None, accounts_root: Path) -> dict[str, Any]:
    """The environment ansible-playbook had when the WoD user ran it (via procmail)."""
    entry = None
    if user:
        try:
            entry = UserDb(accounts_root).user(user)
        except Exception:  # not on this machine (e.g. a sandbox): fall back to our own
            entry = None
    if entry is None:
        own = pwd.getpwuid(os.getuid())
        name, home, shell = own.pw_name, os.environ.get("HOME", own.pw_dir), own.pw_shell
        uid, gid = own.pw_uid, own.pw_gid
    else:
        name, home, shell, uid, gid = user, str(entry.home), entry.shell, entry.uid, entry.gid
    env = {"HOME": home, "USER": name, "LOGNAME": name, "SHELL": shell, "PATH": LOGIN_PATH}
    return {
        "env": env,
        "user_id": name,
        "user_dir": home,
        "user_shell": shell,
        "user_uid": uid,
        "user_gid": gid,
    }


def _os_release(etc: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in ("os-release", "../usr/lib/os-release"):
        try:
            text = (etc / name).read_text(encoding="utf-8")
        except OSError:
            continue
        for line in text.splitlines():
            key, equals, value = line.partition("=")
            if equals and key.strip() and not key.startswith("#"):
                words = shlex.split(value, posix=True) or [""]
                values[key.strip()] = words[0]
        return values
    return values


def _distribution_facts(etc: Path) -> dict[str, Any]:
    release = _os_release(etc)
    ident = release.get("ID", "").lower()
    name = _DISTRIBUTIONS.get(ident, release.get("NAME", "NA"))
    version = release.get("VERSION_ID", "NA")
    if name == "Debian":
        try:
            debian_version = (etc / "debian_version").read_text(encoding="utf-8").strip()
        except OSError:
            debian_version = ""
        if debian_version[:1].isdigit():
            version = debian_version
    codename = release.get("VERSION_CODENAME") or release.get("UBUNTU_CODENAME", "")
    if not codename and "(" in release.get("VERSION", ""):
        codename = release["VERSION"].split("(", 1)[1].rstrip(")")
    family = _FAMILIES.get(name, name)
    major = version.split(".")[0]
    return {
        "distribution": name,
        "distribution_version": version,
        "distribution_major_version": major,
        "distribution_release": codename or "NA",
        "os_family": family,
        "pkg_mgr": _pkg_mgr(family, major),
    }


def _pkg_mgr(family: str, major: str) -> str:
    if family == "Debian":
        return "apt"
    if family == "RedHat":
        return "yum" if major.isdigit() and int(major) < 8 else "dnf"
    if family == "Suse":
        return "zypper"
    return "unknown"
