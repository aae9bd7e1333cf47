"""The package as pip builds it: no setuptools warnings, every data file and layer shipped,
`wodmail demo` working from the wheel alone, and the README's offline install (a wheelhouse
built on a connected machine, installed with `--no-index`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support.paths import REPO as ROOT

LAYERS = ("dev", "dev/standins", "dispatch", "hooks", "host", "installation", "intake",
          "journal", "lifecycle", "peers", "relay", "status", "templating", "workshops")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout: pip builds in the source tree (build/, *.egg-info), and the
    checkout stays clean."""
    copy = tmp_path_factory.mktemp("source") / "wodmail"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".venv*", ".git", "*_cache", ".hypothesis", "build", "*.egg-info", "__pycache__"))
    return copy


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, source: Path) -> tuple[Path, str]:
    """The wheel pip builds from a copy of the checkout, and pip's output."""
    work = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(work), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if built.returncode != 0 and "Could not find a version" in built.stderr:
        pytest.skip(f"pip cannot fetch the build backend: {built.stderr.strip()[-200:]}")
    assert built.returncode == 0, built.stderr
    [found] = work.glob("wodmail-*.whl")
    return found, built.stdout + built.stderr


def test_wheel_builds_quietly_with_its_data(wheel: tuple[Path, str]):
    path, output = wheel
    assert "would be ignored" not in output and "is absent from the" not in output, output
    names = set(zipfile.ZipFile(path).namelist())
    for data in ("wodmail/sample/vars.yml", "wodmail/sample/skel/.bashrc",
                 "wodmail/sample/notebooks/WKSHP-Sample101/0-ReadMeFirst.ipynb",
                 "wodmail/sample/notebooks/WKSHP-Sample101/pictures/wod-logo.png",
                 "wodmail/templates/jupyterlab-workspace.json.j2",
                 "wodmail/templates/status.html.j2",
                 "wodmail/workshops/docker101.py",
                 "wodmail/__main__.py"):
        assert data in names
    for layer in LAYERS:
        assert f"wodmail/{layer}/__init__.py" in names, f"layer {layer} is not in the wheel"


def test_the_demo_runs_from_the_wheel_alone(wheel: tuple[Path, str], tmp_path: Path):
    # The wheel unpacked on PYTHONPATH, ahead of the checkout's editable install; the
    # dependencies come from the test environment. The demo's own subprocesses (wodmail
    # serve, wodmail-test) inherit PYTHONPATH, so they run the wheel's code too.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
         "--target", str(target), str(wheel[0])],
        check=True, capture_output=True, timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import wodmail.dev.demo as d; print(d.__file__)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert where.startswith(str(target)), where
    demo = subprocess.run(
        [sys.executable, "-m", "wodmail", "demo"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "# demo succeeded" in demo.stdout


# pip with nothing of this machine's pip configuration (its find-links and extra indexes):
# what an admin's plain pip does.
PLAIN_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}


def test_the_offline_install_from_a_wheelhouse(source: Path, tmp_path: Path):
    # The README's two steps: `pip wheel` on a connected machine (pip may use its cache or
    # the index here), then, on the backend, `pip install --no-index --find-links` into a
    # fresh venv, with no network at all when a network namespace can be made (root).
    env = {**os.environ, **PLAIN_PIP}
    wheelhouse = tmp_path / "wheelhouse"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheelhouse), f"{source}[ansible]"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    if built.returncode != 0 and ("Could not find a version" in built.stderr
                                  or "NewConnectionError" in built.stderr):
        pytest.skip(f"building the wheelhouse needs the package index: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stderr[-3000:]
    venv = tmp_path / "backend-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    offline = ["unshare", "--net"] if os.geteuid() == 0 and shutil.which("unshare") else []
    installed = subprocess.run(
        [*offline, str(venv / "bin" / "pip"), "install", "-q", "--no-index",
         "--find-links", str(wheelhouse), "wodmail[ansible]"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    if not offline:
        print("no network namespace (not root): installed with --no-index only")
    usage = subprocess.run([str(venv / "bin" / "wodmail"), "--help"], capture_output=True,
                           text=True, timeout=120, check=True).stdout
    assert "check-config" in usage
    # The [ansible] extra came along: vaulted per-student variables can be read.
    subprocess.run([str(venv / "bin" / "python"), "-c", "import ansible.parsing.vault"],
                   check=True, timeout=120)
