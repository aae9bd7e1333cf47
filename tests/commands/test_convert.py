"""`wodmail-test PDF|WORD WORKSHOP N`: the student's notebooks converted by the JupyterHub
environment's nbconvert (JPHUB), as the student, the results 0644 and the student's beside
the notebooks; a missing converter or tool said in one line, with what to install.

JPHUB is a venv of a system Python that sees the test venv's packages (the test extra has
nbconvert and jupyter-docx-bundler); the student is a throwaway Linux user (root only),
named student7 by a passwd of the test's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support.local_users import User

WS = "WKSHP-Convert101"
STUDENT = 7
LIMIT = 600.0


def _notebook(text: str) -> str:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": [f"# {text}\n", "Some *text*."]},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": ["print(1)"],
         "outputs": [{"name": "stdout", "output_type": "stream", "text": ["1\n"]}]},
    ]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4})


@dataclass
class Backend:
    config: Path
    top: Path  # a folder every user may enter: the students' homes are below it
    folder: Path  # the student's workshop folder
    user: User

    def run(self, verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wodmail.testclient", verb, WS, str(STUDENT),
             "--config", str(self.config)],
            capture_output=True, text=True, timeout=LIMIT * 2, check=False,
        )


def _write_config(path: Path, tmp: Path, students: Path, root: Path, jphub: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp / "state"),
        "students_dir": str(students),
        "students": {"min": 1, "max": 10},
        "accounts": {"root": str(root)},
        "vars": {"JPHUB": str(jphub)},
    }))
    return path


def _runs_as(user: User, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """`argv` run by bash as `user`, as the converter runs nbconvert."""
    return subprocess.run(["bash", "-c", '"$@"', "probe", *argv], cwd="/", user=user.uid,
                          group=user.gid, extra_groups=[], capture_output=True,
                          timeout=LIMIT, check=False)


def _jupyterhub_env(top: Path, user: User) -> Path:
    """A JupyterHub environment the student can run, as the WoD installer makes one: a venv
    of the system's Python (of the test's own version), here seeing the test venv's packages
    through a .pth file. The test venv itself may not do: its interpreter can sit in root's
    home (pyenv), which no other user may enter."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    bases = [Path(folder) / version for folder in ("/usr/bin", "/usr/local/bin")]
    base = next((b for b in bases if b.exists() and _runs_as(user, str(b), "-c", "1")
                 .returncode == 0), None)
    if base is None:
        pytest.skip(f"no {version} that another user may run in /usr/bin or /usr/local/bin, "
                    "for the student's JupyterHub environment")
    env = top / "jupyterhub"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(env)], check=True,
                   timeout=LIMIT)
    site = subprocess.run([str(env / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=LIMIT).stdout
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.strip()) / "wodmail-test-venv.pth").write_text("\n".join(sorted(ours)) + "\n")
    script = env / "bin" / "jupyter-nbconvert"  # the console script pip would write
    script.write_text(f"#!{env}/bin/python\nimport sys\n"
                      "from nbconvert.nbconvertapp import main\nsys.exit(main())\n")
    script.chmod(0o755)
    works = _runs_as(user, str(script), "--version")
    if works.returncode != 0:
        pytest.skip(f"the test venv's packages cannot be used by another user: "
                    f"{works.stderr.decode()[-300:]}")
    return env


@pytest.fixture
def backend(throwaway_user: User, tmp_path: Path) -> Iterator[Backend]:
    # pytest's temp folders are root's alone (0700): the student could not reach its home.
    top = Path(tempfile.mkdtemp(prefix="wodmail-convert-"))
    try:
        top.chmod(0o755)
        home = top / "student" / f"student{STUDENT}"
        folder = home / WS
        folder.mkdir(parents=True)
        (folder / "0-First.ipynb").write_text(_notebook("Hello from the first notebook"))
        (folder / "1-Second.ipynb").write_text(_notebook("And from the second"))
        for path in (home, folder, *folder.iterdir()):
            os.chown(path, throwaway_user.uid, throwaway_user.gid)
        home.chmod(0o750)
        (top / "student").chmod(0o755)
        root = tmp_path / "accounts-root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "passwd").write_text(
            f"student{STUDENT}:x:{throwaway_user.uid}:{throwaway_user.gid}::{home}:/bin/bash\n")
        (root / "etc" / "group").write_text(f"student{STUDENT}:x:{throwaway_user.gid}:\n")
        jphub = _jupyterhub_env(top, throwaway_user)
        config = _write_config(tmp_path / "wodmail.yml", tmp_path, top / "student", root, jphub)
        yield Backend(config, top, folder, throwaway_user)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/system-deps.sh installs pandoc)")


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("wodmail-test: config")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_word_makes_a_docx_of_each_notebook_owned_by_the_student(backend):
    _needs("pandoc")
    done = backend.run("WORD")
    assert done.returncode == 0, done.stdout + done.stderr
    for name, text in (("0-First", "Hello from the first notebook"),
                       ("1-Second", "And from the second")):
        result = backend.folder / f"{name}.docx"
        info = result.lstat()
        assert (info.st_uid, info.st_gid) == (backend.user.uid, backend.user.gid)
        assert info.st_mode & 0o7777 == 0o644
        with zipfile.ZipFile(result) as docx:
            assert text in docx.read("word/document.xml").decode()
        assert str(result) in done.stdout


def test_pdf_without_latex_says_what_to_install(backend):
    if shutil.which("xelatex"):
        pytest.skip("xelatex is installed: test_pdf_makes_a_pdf_of_each_notebook covers PDF")
    done = backend.run("PDF")
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert "PDF needs" in line and "xelatex" in line, line
    assert "apt-get install" in line and "texlive-xetex" in line, line
    assert not list(backend.folder.glob("*.pdf"))


def test_pdf_makes_a_pdf_of_each_notebook(backend):
    _needs("pandoc")
    if shutil.which("xelatex") is None:
        pytest.skip("xelatex is not installed (texlive is too big for CI; "
                    "test_pdf_without_latex_says_what_to_install covers its absence)")
    done = backend.run("PDF")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("0-First", "1-Second"):
        result = backend.folder / f"{name}.pdf"
        assert result.read_bytes().startswith(b"%PDF")
        assert result.lstat().st_uid == backend.user.uid
        assert result.lstat().st_mode & 0o7777 == 0o644


def test_a_planted_output_link_is_followed_with_the_students_rights_only(backend):
    _needs("pandoc")
    victim = backend.top / "roots-file"
    victim.write_text("root's, unchanged\n")
    victim.chmod(0o644)
    planted = backend.folder / "1-Second.docx"
    planted.symlink_to(victim)
    os.lchown(planted, backend.user.uid, backend.user.gid)
    done = backend.run("WORD")
    assert done.returncode == 1
    assert victim.read_text() == "root's, unchanged\n"
    assert "1-Second.ipynb" in done.stderr, done.stderr
    assert (backend.folder / "0-First.docx").lstat().st_uid == backend.user.uid


def test_a_planted_workshop_link_is_entered_with_the_students_rights_only(backend):
    _needs("pandoc")
    private = backend.top / "roots-folder"
    private.mkdir(mode=0o700)
    (private / "secret.ipynb").write_text(_notebook("root's notebook"))
    shutil.rmtree(backend.folder)
    backend.folder.symlink_to(private)
    os.lchown(backend.folder, backend.user.uid, backend.user.gid)
    done = backend.run("WORD")
    assert done.returncode == 1
    assert "cannot enter" in done.stderr, done.stderr
    assert sorted(p.name for p in private.iterdir()) == ["secret.ipynb"]


def test_a_jupyterhub_environment_without_nbconvert_says_what_to_install(tmp_path):
    jphub = tmp_path / "jupyterhub"
    (jphub / "bin").mkdir(parents=True)
    config = _write_config(tmp_path / "wodmail.yml", tmp_path, tmp_path / "student",
                           tmp_path / "root", jphub)
    done = subprocess.run(
        [sys.executable, "-m", "wodmail.testclient", "WORD", WS, str(STUDENT),
         "--config", str(config)], capture_output=True, text=True, timeout=LIMIT, check=False)
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert f"WORD needs nbconvert in the JupyterHub environment {jphub}" in line, line
    assert f"{jphub}/bin/pip install nbconvert jupyter-docx-bundler" in line, line


def test_a_workshop_name_with_a_path_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "wodmail.testclient", "PDF", "../../etc", "1"],
        capture_output=True, text=True, timeout=LIMIT, check=False)
    assert done.returncode == 2
    assert "not a workshop folder name" in done.stderr
