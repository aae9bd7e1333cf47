"""Students cannot read each other's work; WODUSER keeps its rights through its ACL.

The report: student5 ran `cat /student/student6/WKSHP-X/2-Creds.ipynb` and read student6's
password (homes 0755, rendered notebooks `-rw-rwxr--`). Here real CREATEs go through the
daemon into sandbox homes prepared as the WoD installer leaves them (mode 0755, then
`setfacl -m u:WODUSER:rwx`, so they show 0775), and the files are then read and written as
the sandbox's numeric uids with `setpriv`: those uids own nothing outside the sandbox.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.e2e import Backend2E
from wodmail.dev.sandbox import ADMIN_UID, SAMPLE_WORKSHOP, Sandbox, make_sandbox
from wodmail.journal.jobs import JobState

WS = SAMPLE_WORKSHOP
CREDS = "2-Creds.ipynb"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("setfacl") is None,
    reason="root only, with setpriv and setfacl: homes belong to other uids, and reading "
    "them is tried as those uids",
)


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """A varpass workshop in a sandbox that other uids can walk down to (pytest's tmp_path
    is under a 0700 folder, which would make every refusal below meaningless)."""
    base = Path(tempfile.mkdtemp(prefix="wodmail-privacy-", dir="/tmp"))
    base.chmod(0o711)
    sandbox = make_sandbox(base / "sandbox", students=range(1, 8), base_id=100,
                           workshop_fields={"varpass": True})
    try:
        probe = subprocess.run(["setfacl", "-m", f"u:{ADMIN_UID}:rwx", str(base)],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"no ACL support under /tmp: {probe.stderr.strip()}")
        (sandbox.notebooks / WS / CREDS).write_text(
            '{"cells": [{"source": ["login student{{ STDID }} / {{ PASSSTU }}"]}]}\n')
        for student in (5, 6):
            installer_home(sandbox.home(student))
        yield sandbox
    finally:
        sandbox.close()
        for thread in threading.enumerate():  # a stopped key pool may still be writing a key
            if thread.name == "wodmail-keypool":
                thread.join(timeout=120)
        shutil.rmtree(base)


def installer_home(home: Path) -> None:
    home.chmod(0o755)
    subprocess.run(["setfacl", "-m", f"u:{ADMIN_UID}:rwx", str(home)], check=True)
    assert stat.S_IMODE(home.stat().st_mode) == 0o775


def as_uid(uid: int, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` run as uid:uid with no supplementary groups."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command],
        capture_output=True, text=True, timeout=60,
    )


def acl_of(path: Path) -> list[str]:
    done = subprocess.run(["getfacl", "-n", "-p", "--", str(path)],
                          capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line and not line.startswith("#")]


async def test_another_student_cannot_read_a_varpass_notebook_but_woduser_can(box: Sandbox):
    wod = await Backend2E(box, box.config()).start()
    try:
        six = await wod.order("CREATE 6 6", WS)
        five = await wod.order("CREATE 5 5", WS)
    finally:
        await wod.stop()
    assert (six.state, five.state) == (JobState.DONE, JobState.DONE), (six.reason, five.reason)
    assert six.result["home_repaired"] == {"student6": ["mode 0775 -> 0770"]}
    password = six.result["password"]
    notebook = box.home(6) / WS / CREDS
    assert password in notebook.read_text()

    # Nothing in either home is open to other users.
    for student in (5, 6):
        home = box.home(student)
        assert stat.S_IMODE(home.stat().st_mode) == 0o770
        for path in [home, *home.rglob("*")]:
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode):
                assert info.st_mode & 0o007 == 0, f"{path}: {stat.filemode(info.st_mode)}"

    # student5 reads its own notebook (the path is open to it) but not student6's.
    own = as_uid(box.uid(5), "cat", str(box.home(5) / WS / CREDS))
    assert own.returncode == 0 and five.result["password"] in own.stdout, own.stderr
    stolen = as_uid(box.uid(5), "cat", str(notebook))
    assert stolen.returncode != 0 and "Permission denied" in stolen.stderr
    assert password not in stolen.stdout
    assert as_uid(box.uid(5), "ls", str(box.home(6))).returncode != 0

    # WODUSER reads and writes it, and writes in the home, through its ACL entries.
    read = as_uid(ADMIN_UID, "cat", str(notebook))
    assert read.returncode == 0 and password in read.stdout, read.stderr
    wrote = as_uid(ADMIN_UID, "sh", "-c", 'echo "# checked" >> "$1" && touch "$2"', "sh",
                   str(notebook), str(box.home(6) / "from-woduser"))
    assert wrote.returncode == 0, wrote.stderr
    assert notebook.read_text().endswith("# checked\n")
    assert f"user:{ADMIN_UID}:rwx" in acl_of(box.home(6))
    assert "mask::rwx" in acl_of(box.home(6))
