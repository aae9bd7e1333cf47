"""Other local users for tests: a throwaway Linux account (root only), and a child process
running as it that connects to the SMTP port and holds its connections.

The account is made with useradd under a random name and removed after the test, even when
the test fails, so the host's own accounts are left as they were.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from wodmail.dev.standins.flood import IdleHolder


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture
def throwaway_user() -> Iterator[User]:
    """A new system user (no home, no login shell) with a random name; deleted after."""
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a throwaway Linux user with useradd")
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("useradd (passwd) or setpriv (util-linux) not installed")
    name = f"wodgate{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


class Holder(IdleHolder):
    """`count` connections to `port` held by a child process running as `user`."""

    def __init__(self, user: User, port: int, count: int) -> None:
        super().__init__(user.uid, user.gid, port, count)
