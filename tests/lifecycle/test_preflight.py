"""Nothing destructive happens before everything that could fail the order afterwards was
checked: the home and account, `compile` scripts, templates, hook scripts (issue: a symlinked
home used to be refused only at wipe-home, after the password changed and, for CLEANUP, after
the portal and hub calls). A home left 0777 or owned by root is repaired, not kept."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.e2e import Backend2E, hub_calls, portal_writes
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox
from wodmail.journal.jobs import JobState

WS = SAMPLE_WORKSHOP
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chown to root and back needs root")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = make_sandbox(tmp_path / "sandbox", students=range(1, 6), base_id=100,
                       workshop_fields={"compile": None})
    yield box
    box.close()


def step_names(job: Any) -> list[str]:
    return [step["name"] for step in job.result.get("steps", [])]


def shadow_line(sandbox: Sandbox, user: str) -> str:
    lines = (sandbox.accounts_root / "etc" / "shadow").read_text().splitlines()
    return next(line for line in lines if line.startswith(f"{user}:"))


def symlinked_home(sandbox: Sandbox, student: int, tmp_path: Path) -> Path:
    """Replace studentN's home by a symlink to a folder holding a precious file."""
    elsewhere = tmp_path / f"elsewhere{student}"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    shutil.rmtree(sandbox.home(student))
    sandbox.home(student).symlink_to(elsewhere)
    return elsewhere


def assert_untouched(sandbox: Sandbox, job: Any, student: int, shadow: str) -> None:
    assert job.state is JobState.FAILED
    names = step_names(job)
    assert not any(name.startswith("set-password") for name in names), names
    assert shadow_line(sandbox, f"student{student}") == shadow
    assert portal_writes(sandbox) == []
    assert hub_calls(sandbox) == []


@pytest.mark.parametrize("verb", ["CREATE", "CLEANUP", "PURGE"])
async def test_a_symlinked_home_is_refused_before_anything_changes(
    sandbox, backend, tmp_path, verb
):
    elsewhere = symlinked_home(sandbox, 3, tmp_path)
    shadow = shadow_line(sandbox, "student3")
    sandbox.portal.add_customer(3, notebook=WS, studentId=103, cleaned=True)  # for PURGE
    wod = await backend()
    sandbox.clear_calls()
    job = await wod.order(f"{verb} 3 3", WS)
    assert_untouched(sandbox, job, 3, shadow)
    assert job.reason.endswith("it is a symlink"), job.reason
    assert step_names(job)[-1] == "home student3"
    assert (elsewhere / "precious.txt").read_text() == "keep me"


async def test_a_world_writable_home_is_repaired(sandbox, backend):
    os.chmod(sandbox.home(2), 0o777)
    wod = await backend()
    job = await wod.order("CREATE 2 2", WS)
    assert job.state is JobState.DONE, job.reason
    assert stat.S_IMODE(os.stat(sandbox.home(2)).st_mode) == 0o750
    assert job.result["home_repaired"] == {"student2": ["mode 0777 -> 0750"]}


@needs_root
async def test_a_home_owned_by_root_is_given_back(sandbox, backend):
    os.chown(sandbox.home(4), 0, 0)
    wod = await backend()
    job = await wod.order("CREATE 4 4", WS)
    assert job.state is JobState.DONE, job.reason
    info = os.stat(sandbox.home(4))
    assert (info.st_uid, info.st_gid) == (sandbox.uid(4), sandbox.uid(4))
    uid = sandbox.uid(4)
    assert job.result["home_repaired"] == {"student4": [f"owner 0:0 -> {uid}:{uid}"]}


async def test_a_missing_compile_script_fails_before_the_password(tmp_path):
    box = make_sandbox(tmp_path / "c", students=range(1, 4), base_id=100,
                       workshop_fields={"compile": "stdsetup.sh"})
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shadow = shadow_line(box, "student1")
    wod = await Backend2E(box, box.config(scripts={"public": str(scripts)})).start()
    try:
        box.clear_calls()
        job = await wod.order("CREATE 1 1", WS)
    finally:
        await wod.stop()
        box.close()
    assert_untouched(box, job, 1, shadow)
    assert job.reason == (
        f"preflight: compile script stdsetup.sh is in neither scripts folder ({scripts})"
    )
    assert step_names(job)[-1] == "preflight"


def write_script(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


async def test_a_hook_script_that_cannot_start_fails_before_the_password(
    sandbox, backend, tmp_path
):
    scripts = tmp_path / "scripts"
    script = write_script(scripts, f"post-copy-{WS}.sh", "echo no interpreter line\n")
    shadow = shadow_line(sandbox, "student2")
    wod = await backend(scripts={"public": str(scripts)})
    sandbox.clear_calls()
    job = await wod.order("CREATE 2 2", WS)
    assert_untouched(sandbox, job, 2, shadow)
    assert job.reason == (
        f"preflight: hook script {script} has no #! line: it cannot be started "
        "(add #!/bin/bash)"
    )


async def test_a_template_syntax_error_fails_before_the_password_even_with_a_create_hook(
    sandbox, backend, tmp_path
):
    scripts = tmp_path / "scripts"
    write_script(scripts, f"create-{WS}.sh", "#!/bin/sh\necho HTTPPORT=8888 > $WODMAIL_VARS_FILE\n")
    (sandbox.notebooks / WS / "broken.py").write_text("print('{{ STDID }')\n")
    shadow = shadow_line(sandbox, "student2")
    wod = await backend(scripts={"public": str(scripts)})
    sandbox.clear_calls()
    job = await wod.order("CREATE 2 2", WS)
    assert_untouched(sandbox, job, 2, shadow)
    assert step_names(job)[-1] == "check-templates"
    assert f"{WS}/broken.py" in job.reason


async def test_reset_without_a_reset_hook_changes_no_password(tmp_path):
    box = make_sandbox(tmp_path / "r", students=range(1, 6), base_id=100,
                       workshop_fields={"reset": True})
    shadow = shadow_line(box, "student3")
    wod = await Backend2E(box, box.config()).start()
    try:
        box.clear_calls()
        job = await wod.order("RESET 3 0", WS)
    finally:
        await wod.stop()
        box.close()
    assert_untouched(box, job, 3, shadow)
    assert job.reason == f"no reset hook for {WS}"
