"""A real OpenLDAP server for tests: its own temp dir, mdb backend, a free loopback port.

The WoD LDAP server is 389-ds, whose manager is `cn=Directory Manager` with no suffix.
slapd accepts a rootdn only under its database's suffix, so that DN gets a tiny database
of its own (suffix = rootdn = `cn=Directory Manager`) and the people database grants it
`manage` through its ACL: binding and writing then work exactly as against 389-ds.

A fixture plugin registered in tests/conftest.py: its fixture is named `slapd`; tests using
it are skipped, with the reason, when slapd or its schema files are not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wodmail.dev.processes import stop_process

SUFFIX = "dc=example,dc=org"
MANAGER_DN = "cn=Directory Manager"
MANAGER_PASSWORD = "manager-secret"
# Logins on the server and their first passwords; sec-student1 has another login prefix.
INITIAL_PASSWORDS = {
    "student1": "first-pass-1",
    "student2": "first-pass-2",
    "sec-student1": "first-pass-s1",
}
SBIN_PATH = "/usr/sbin:/usr/local/sbin:/sbin"
SCHEMA_DIRS = (Path("/etc/ldap/schema"), Path("/etc/openldap/schema"))
MODULE_DIRS = (
    Path("/usr/lib/ldap"),
    Path("/usr/lib64/openldap"),
    Path("/usr/lib/openldap"),
    Path("/usr/libexec/openldap"),
)
START_TIMEOUT = 15.0


@dataclass
class Slapd:
    """A running slapd and what a test needs to talk to it."""

    host: str
    port: int
    base_dn: str = SUFFIX
    bind_dn: str = MANAGER_DN
    bind_password: str = MANAGER_PASSWORD
    passwords: dict[str, str] = field(default_factory=lambda: dict(INITIAL_PASSWORDS))

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}/"

    def dn(self, login: str) -> str:
        return f"uid={login},ou=People,{self.base_dn}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _slapd_binary() -> str | None:
    return shutil.which("slapd") or shutil.which("slapd", path=SBIN_PATH)


def _schema_dir() -> Path | None:
    return next((d for d in SCHEMA_DIRS if (d / "inetorgperson.schema").is_file()), None)


def _mdb_module_dir() -> Path | None:
    """Where back_mdb is, or None when slapd has it built in."""
    return next((d for d in MODULE_DIRS if any(d.glob("back_mdb*"))), None)


def _config(work: Path, schema: Path, modules: Path | None) -> str:
    schemas = "".join(
        f"include {schema / name}.schema\n" for name in ("core", "cosine", "nis", "inetorgperson")
    )
    load = f"modulepath {modules}\nmoduleload back_mdb\n" if modules else ""
    return f"""{schemas}{load}pidfile {work / "slapd.pid"}

database ldif
suffix "{MANAGER_DN}"
rootdn "{MANAGER_DN}"
rootpw {MANAGER_PASSWORD}
directory {work / "manager"}

database mdb
maxsize 10485760
suffix "{SUFFIX}"
directory {work / "people"}
access to * by dn.exact="{MANAGER_DN}" manage by * break
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


def _entries() -> str:
    people = "".join(
        f"""
dn: uid={login},ou=People,{SUFFIX}
objectClass: inetOrgPerson
uid: {login}
cn: {login}
sn: {login}
userPassword: {password}
"""
        for login, password in INITIAL_PASSWORDS.items()
    )
    return f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=People,{SUFFIX}
objectClass: organizationalUnit
ou: People
{people}"""


def _wait_listening(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited ({process.returncode}): {log_file.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"slapd did not listen on port {port} within {START_TIMEOUT:g} s")


@pytest.fixture(name="slapd")
def slapd_server(tmp_path: Path) -> Iterator[Slapd]:
    """A fresh slapd holding ou=People with the INITIAL_PASSWORDS students."""
    binary = _slapd_binary()
    if binary is None:
        pytest.skip("slapd is not installed (Debian/Ubuntu: apt-get install slapd ldap-utils)")
    schema = _schema_dir()
    if schema is None:
        pytest.skip(f"no OpenLDAP schema files in any of {[str(d) for d in SCHEMA_DIRS]}")
    work = tmp_path / "slapd"
    for sub in ("manager", "people"):
        (work / sub).mkdir(parents=True)
    conf = work / "slapd.conf"
    conf.write_text(_config(work, schema, _mdb_module_dir()))
    (work / "entries.ldif").write_text(_entries())
    subprocess.run(
        [binary, "-T", "add", "-f", conf, "-b", SUFFIX, "-l", work / "entries.ldif"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log_file = work / "slapd.log"
    with log_file.open("wb") as log:
        # -d 0 keeps slapd in the foreground (our child) without debug output.
        process = subprocess.Popen(
            [binary, "-f", conf, "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(process, port, log_file)
        yield Slapd(host="127.0.0.1", port=port)
    finally:
        stop_process(process, grace=10)
