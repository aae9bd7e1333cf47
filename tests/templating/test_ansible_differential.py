"""Differential test: our rendering against ansible-core's `template` module, byte for byte.

One ansible-playbook run (local connection, no facts) templates every file of the
fixture workshop that wodmail renders, with the same variables layered the same way as
the old backend did: group_vars-like file, public then private `variables_<W>.yml`, the
per-student variables, then `-e "MODEWS=... STDID=..."` extra vars.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePath

import pytest

from support.paths import FIXTURES as _FIXTURES
from wodmail.host.deploy import delivery
from wodmail.templating.renderer import Renderer, layer_variables, load_vars_file

FIXTURES = _FIXTURES / "notebooks"
WORKSHOP = FIXTURES / "WKSHP-Fixture101"
VARS = FIXTURES / "_vars"
CHALLENGE = "CHLG-Fixture101"
STDID = 7
PASSWORD = "S3cr3t-pw!"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_vars: {public}
    - ansible.builtin.include_vars: {private}
    - ansible.builtin.include_vars: {student}
    - ansible.builtin.include_vars: {files}
    - name: render the workshop files as the old backend did
      ansible.builtin.template:
        src: "{{{{ item.src }}}}"
        dest: "{{{{ item.dest }}}}"
      loop: "{{{{ wodmail_files }}}}"
"""


def templated_files() -> list[PurePath]:
    found = []
    for folder, _dirs, names in os.walk(WORKSHOP):
        for name in names:
            relative = Path(folder, name).relative_to(WORKSHOP)
            if delivery(relative) == "render":
                found.append(relative)
    return sorted(found)


def ansible_environment(tmp: Path) -> dict[str, str]:
    config = tmp / "ansible.cfg"
    config.write_text("[defaults]\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"),
        "ANSIBLE_NOCOWS": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }


@pytest.fixture(scope="module")
def ansible_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip(f"ansible-core (a test dependency) is not installed: no {ANSIBLE_PLAYBOOK}")
    tmp = tmp_path_factory.mktemp("ansible")
    out = tmp / "out"
    files = []
    for relative in templated_files():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        files.append({"src": str(WORKSHOP / relative), "dest": str(out / relative)})
    files_vars = tmp / "files.json"
    files_vars.write_text(json.dumps({"wodmail_files": files}))
    inventory = tmp / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts").write_text("localhost ansible_connection=local\n")
    (inventory / "group_vars" / "all.yml").write_bytes((VARS / "group_vars.yml").read_bytes())
    playbook = tmp / "deploy.yml"
    playbook.write_text(
        PLAYBOOK.format(
            public=VARS / "public" / f"variables_{CHALLENGE}.yml",
            private=VARS / "private" / f"variables_{CHALLENGE}.yml",
            student=VARS / "student.yml",
            files=files_vars,
        )
    )
    extra_vars = (
        f"MODEWS=CHLG CHALLENGE={CHALLENGE} WORKSHOP={WORKSHOP.name} STDID={STDID} "
        f"PASSSTU={PASSWORD}"
    )
    command = [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        str(inventory / "hosts"),
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-e",
        extra_vars,
        str(playbook),
    ]
    run = subprocess.run(
        command,
        cwd=tmp,
        env=ansible_environment(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"ansible-playbook failed:\n{run.stdout}\n{run.stderr}"
    return out


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    variables = layer_variables(
        load_vars_file(VARS / "group_vars.yml"),
        VARS / "public" / f"variables_{CHALLENGE}.yml",
        VARS / "private" / f"variables_{CHALLENGE}.yml",
        load_vars_file(VARS / "student.yml"),
        stdid=STDID,
        workshop_ws=WORKSHOP.name,
        challenge_w=CHALLENGE,
        mode="CHLG",
        password=PASSWORD,
    )
    return Renderer(variables)


def test_the_fixture_covers_every_templated_kind() -> None:
    suffixes = {path.suffix for path in templated_files()} | {
        path.name for path in templated_files() if path.name == "Variables.ps1"
    }
    assert {".ipynb", ".yaml", ".py", ".sh", ".src", ".tf", ".env", "Variables.ps1"} <= suffixes


@pytest.mark.parametrize("relative", templated_files(), ids=str)
def test_render_is_byte_identical_to_ansible(
    relative: PurePath, ansible_output: Path, renderer: Renderer
) -> None:
    source = (WORKSHOP / relative).read_bytes().decode("utf-8")
    ours = renderer.render(source, f"{WORKSHOP.name}/{relative}").encode("utf-8")
    theirs = (ansible_output / relative).read_bytes()
    assert ours == theirs
