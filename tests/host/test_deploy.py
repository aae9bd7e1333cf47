"""Deploying a workshop into a student home (LIFECYCLE.md, "Deploying the notebooks").

Real files under tmp_path: a copy of the fixture workshops and a sandbox HOME.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path, PurePath

import pytest

from support.paths import FIXTURES as _FIXTURES
from wodmail.errors import AccountError, TemplateError
from wodmail.host.deploy import (
    WORKSPACE_FILE,
    TemplateIssue,
    check_tree,
    delivery,
    deploy_workshop,
    render_tree,
)
from wodmail.templating.renderer import Renderer

FIXTURES = _FIXTURES / "notebooks"
VARIABLES = {
    "STDID": "7",
    "WORKSHOP": "WKSHP-Fixture101",
    "CHALLENGE": "CHLG-Fixture101",
    "MODEWS": "CHLG",
    "PASSSTU": "pw-7",
    "BRANDING": "WoD",
    "BRANDINGLOGO": "![logo](img/logo.png)",
    "BRANDINGURL": "https://wod.io",
    "SURVEYURL": "https://survey.example",
    "SURVEYCHALURL": "https://survey.example/chlg",
    "WODBEFQDN": "wod-be.example.org",
    "WODBEAPIURL": "http://{{ WODBEFQDN }}:8000",
    "IP-WKSHP-Fixture101": "10.1.2.3",
    "HTTPPORT-WKSHP-Fixture101": 14151,
    "HTTPPORT": 14158,
    "APPNAME": "app",
    "APPURL": "http://{{ vars['IP-WKSHP-Fixture101'] }}:{{ HTTPPORT }}",
    "PORTBASE": 14151,
    "SPARKTOK": "tok",
    "NONEVAR": None,
    "TRUEVAR": True,
    "FALSEVAR": False,
    "UNSAFEVAR": "x",
    "HOSTS": ["node1"],
    "PORTS": [8080],
    "SETTINGS": {"api": "{{ WODBEAPIURL }}/v1", "retries": 3},
    "NOTES": "n",
}


@pytest.fixture
def workshops(tmp_path: Path) -> Path:
    """A private copy of the fixture workshops (tests may add files to it)."""
    copy = tmp_path / "notebooks"
    shutil.copytree(FIXTURES, copy, symlinks=True)
    return copy


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "student" / "student7"
    home.mkdir(parents=True)
    (home / ".bashrc").write_text("# skeleton\n")
    return home


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root` with its mode and content digest (or link target)."""
    listing = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = "-> " + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = "dir"
            listing[str(path.relative_to(root))] = (info.st_mode, content)
    return listing


def test_deploy_renders_templates_and_copies_the_rest(workshops: Path, home: Path) -> None:
    source = workshops / "WKSHP-Fixture101"
    result = deploy_workshop(source, home, Renderer(VARIABLES))

    deployed = home / "WKSHP-Fixture101"
    assert result.workshop_dir == deployed
    readme = (deployed / "0-ReadMeFirst.ipynb").read_text()
    assert "student7" in readme
    assert "You are taking the CHLG-Fixture101 challenge" in readme
    assert "%login 10.1.2.3" in readme
    assert "{{" not in (deployed / "scripts" / "setup.sh").read_text()
    for as_is in ["README.md", "notes.txt", ".hidden.sh", "Pictures/grommet.png"]:
        assert (deployed / as_is).read_bytes() == (source / as_is).read_bytes(), as_is
    assert (deployed / "scripts" / "plain-crlf.sh").read_bytes() == (
        source / "scripts" / "plain-crlf.sh"
    ).read_bytes()
    assert result.rendered > 0
    assert result.files == len([p for p in deployed.rglob("*") if not p.is_dir()])


def test_deploy_keeps_modes_but_closes_everything_to_other_users(
    workshops: Path, home: Path
) -> None:
    source = workshops / "WKSHP-Fixture101"
    (source / "Pictures" / "current.png").symlink_to("grommet.png")
    (source / "scripts" / "setup.sh").chmod(0o775)
    (source / "README.md").chmod(0o664)
    (source / "config").chmod(0o2775)
    deploy_workshop(source, home, Renderer(VARIABLES))

    deployed = home / "WKSHP-Fixture101"
    assert stat.S_IMODE((deployed / "scripts" / "setup.sh").stat().st_mode) == 0o770
    assert stat.S_IMODE((deployed / "README.md").stat().st_mode) == 0o660
    assert stat.S_IMODE((deployed / "config").stat().st_mode) == 0o2770
    assert os.readlink(deployed / "Pictures" / "current.png") == "grommet.png"
    for path in [deployed, *home.rglob("*")]:
        if not path.is_symlink() and path.name != ".bashrc":  # the skeleton is not ours
            assert path.lstat().st_mode & 0o007 == 0, f"{path} is open to other users"


def test_stale_checkpoints_and_editor_leftovers_are_not_delivered(
    workshops: Path, home: Path
) -> None:
    deploy_workshop(workshops / "WKSHP-Fixture101", home, Renderer(VARIABLES))

    deployed = home / "WKSHP-Fixture101"
    assert not (deployed / ".ipynb_checkpoints" / "1-WKSHP-Lab-checkpoint.ipynb").exists()
    assert not (deployed / ".~1-WKSHP-Lab.ipynb").exists()
    # Other files under .ipynb_checkpoints are copied, never rendered.
    helper = deployed / ".ipynb_checkpoints" / "helper-checkpoint.py"
    assert helper.read_text() == "print('{{ STALE }}')\n"


def test_readme_checkpoint_is_a_copy_of_the_rendered_readme(workshops: Path, home: Path) -> None:
    deploy_workshop(workshops / "WKSHP-Fixture101", home, Renderer(VARIABLES))

    deployed = home / "WKSHP-Fixture101"
    checkpoint = deployed / ".ipynb_checkpoints" / "0-ReadMeFirst-checkpoint.ipynb"
    assert checkpoint.read_bytes() == (deployed / "0-ReadMeFirst.ipynb").read_bytes()


def test_no_readme_means_no_checkpoint_copy(workshops: Path, home: Path) -> None:
    source = workshops / "WKSHP-Fixture101"
    (source / "0-ReadMeFirst.ipynb").unlink()
    deploy_workshop(source, home, Renderer(VARIABLES))

    checkpoints = home / "WKSHP-Fixture101" / ".ipynb_checkpoints"
    assert checkpoints.is_dir()
    assert not (checkpoints / "0-ReadMeFirst-checkpoint.ipynb").exists()


def test_workspace_file_opens_the_readme_on_login(workshops: Path, home: Path) -> None:
    result = deploy_workshop(workshops / "WKSHP-Fixture101", home, Renderer(VARIABLES))

    workspace = home / ".jupyter" / "lab" / "workspaces" / WORKSPACE_FILE
    assert result.workspace_file == workspace
    content = json.loads(workspace.read_text())
    assert content["metadata"]["id"] == "default"
    layout = content["data"]["layout-restorer:data"]["main"]
    assert layout["current"] == "notebook:WKSHP-Fixture101/0-ReadMeFirst.ipynb"
    opened = content["data"]["notebook:WKSHP-Fixture101/0-ReadMeFirst.ipynb"]["data"]
    assert opened == {"path": "WKSHP-Fixture101/0-ReadMeFirst.ipynb", "factory": "Notebook"}


def test_student_paths_cover_the_workshop_and_the_workspace(workshops: Path, home: Path) -> None:
    result = deploy_workshop(workshops / "WKSHP-Fixture101", home, Renderer(VARIABLES))

    assert result.student_paths == (
        home / "WKSHP-Fixture101",
        home / ".jupyter",
        result.workspace_file,
    )


def test_an_existing_jupyter_folder_is_not_handed_over_again(workshops: Path, home: Path) -> None:
    (home / ".jupyter" / "lab").mkdir(parents=True)
    result = deploy_workshop(workshops / "WKSHP-Fixture101", home, Renderer(VARIABLES))

    assert result.student_paths == (
        home / "WKSHP-Fixture101",
        home / ".jupyter" / "lab" / "workspaces",
        result.workspace_file,
    )


def test_redeploy_replaces_a_previous_copy(workshops: Path, home: Path) -> None:
    previous = home / "WKSHP-Fixture101"
    previous.mkdir()
    (previous / "left-from-last-time.txt").write_text("old\n")
    (previous / "0-ReadMeFirst.ipynb").write_text("old readme\n")

    deploy_workshop(workshops / "WKSHP-Fixture101", home, Renderer(VARIABLES))

    assert not (previous / "left-from-last-time.txt").exists()
    assert "student7" in (previous / "0-ReadMeFirst.ipynb").read_text()
    assert not list(home.glob(".wodmail-deploy-*"))


def test_a_bad_template_leaves_home_exactly_as_it_was(workshops: Path, home: Path) -> None:
    previous = home / "WKSHP-Broken101"
    previous.mkdir()
    (previous / "0-ReadMeFirst.ipynb").write_text("the student's previous copy\n")
    before = snapshot(home)

    with pytest.raises(TemplateError) as caught:
        deploy_workshop(workshops / "WKSHP-Broken101", home, Renderer(VARIABLES))

    assert caught.value.file == "WKSHP-Broken101/1-WKSHP-Lab.ipynb"
    assert "undefined variable 'FOO'" in str(caught.value)
    assert snapshot(home) == before


def test_deploy_needs_the_home(workshops: Path, tmp_path: Path) -> None:
    with pytest.raises(AccountError, match="no home directory"):
        deploy_workshop(workshops / "WKSHP-Fixture101", tmp_path / "nobody", Renderer(VARIABLES))


def test_deploy_of_a_missing_workshop_folder_is_a_clear_error(tmp_path: Path, home: Path) -> None:
    with pytest.raises(TemplateError, match="no such workshop folder"):
        deploy_workshop(tmp_path / "WKSHP-Nope", home, Renderer(VARIABLES))
    assert not list(home.glob(".wodmail-deploy-*"))


def test_staging_left_by_a_crashed_deploy_is_removed(workshops: Path, home: Path) -> None:
    leftover = home / ".wodmail-deploy-crashed"
    (leftover / "WKSHP-Fixture101").mkdir(parents=True)

    deploy_workshop(workshops / "WKSHP-Fixture101", home, Renderer(VARIABLES))

    assert not leftover.exists()


def test_render_tree_writes_what_deploy_puts_in_home(
    workshops: Path, home: Path, tmp_path: Path
) -> None:
    source = workshops / "WKSHP-Fixture101"
    out = tmp_path / "out" / "WKSHP-Fixture101"
    tree = render_tree(source, out, Renderer(VARIABLES))
    deploy_workshop(source, home, Renderer(VARIABLES))

    assert snapshot(out) == snapshot(home / "WKSHP-Fixture101")
    assert sorted(tree.files) == sorted(p for p in out.rglob("*") if not p.is_dir())


def test_check_tree_lists_every_problem_of_a_workshop(workshops: Path) -> None:
    issues = check_tree(workshops / "WKSHP-Broken101", Renderer(VARIABLES))

    assert issues == [
        TemplateIssue("WKSHP-Broken101/1-WKSHP-Lab.ipynb", "undefined variable 'BAR'", True,
                      "BAR"),
        TemplateIssue("WKSHP-Broken101/1-WKSHP-Lab.ipynb", "undefined variable 'FOO'", True,
                      "FOO"),
        TemplateIssue(
            "WKSHP-Broken101/scripts/count.sh",
            "template syntax error at line 3: Missing end of comment tag",
        ),
    ]


def test_check_tree_of_a_good_workshop_is_empty(workshops: Path) -> None:
    assert check_tree(workshops / "WKSHP-Fixture101", Renderer(VARIABLES)) == []


def test_invalid_utf8_bytes_of_a_template_are_kept(workshops: Path, home: Path) -> None:
    source = workshops / "WKSHP-Fixture101"
    (source / "latin1.sh").write_bytes(b"echo 'caf\xe9' {{ STDID }}\n")
    deploy_workshop(source, home, Renderer(VARIABLES))

    assert (home / "WKSHP-Fixture101" / "latin1.sh").read_bytes() == b"echo 'caf\xe9' 7\n"


@pytest.mark.parametrize(
    ("path", "how"),
    [
        ("0-ReadMeFirst.ipynb", "render"),
        ("sub/dir/play.yaml", "render"),
        ("tool.py", "render"),
        ("run.sh", "render"),
        ("env.src", "render"),
        ("main.tf", "render"),
        ("lab.env", "render"),
        ("Variables.ps1", "render"),
        ("Other.ps1", "copy"),
        ("play.yml", "copy"),
        ("README.md", "copy"),
        ("Pictures/a.png", "copy"),
        ("NOTEBOOK.IPYNB", "copy"),
        (".hidden.sh", "copy"),
        (".ipynb_checkpoints/run-checkpoint.sh", "copy"),
        ("1-Lab-checkpoint.ipynb", "skip"),
        (".ipynb_checkpoints/1-Lab-checkpoint.ipynb", "skip"),
        (".~1-Lab.ipynb", "skip"),
    ],
)
def test_which_files_are_templates(path: str, how: str) -> None:
    assert delivery(PurePath(path)) == how
