"""The installation's private `pre_templating.yml` / `post_templating.yml` task files.

The old `copy_folder.yml` included `<WODANSIBLEPRIVDIR>/pre_templating.yml` after copying a
workshop's plain files into HOME/WS and before rendering its templates, and
`post_templating.yml` right after. wodmail runs them at the same two points, through the
installation's own `ansible-playbook` (the slow path: only installations that have them pay
for it), in a small generated play that sees the variables `copy_folder.yml` saw: the same
inventories, `--limit`, `WODANSPLAYOPT`/`WODANSPRIVOPT` extra vars and vault secret
(`Installation.playbook_args`; the secret as wodmail read and checked it, copied into a
0600 file of its own), `include_vars` of `/etc/wod.yml`, of the workshop's
variables files and of the per-student vaulted file, and the order's `STDID`, `WORKSHOP`,
`CHALLENGE`, `MODEWS`, `DIR` (and `PASSSTU` when the workshop exposes it), passed in a
0600 extra-vars file rather than on a command line.

The playbook runs as wodmail's own user (root on a backend), which the tasks' `become`
then needs no sudo for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from wodmail.errors import ConfigurationError, HookFailed
from wodmail.installation.reader import Installation
from wodmail.logs import scrub_text

log = structlog.get_logger(__name__)

TASK_FILES = ("pre_templating", "post_templating")
OUTPUT_CAP = 64 * 1024


def task_files(installation: Installation | None) -> dict[str, Path]:
    """The private templating task files the installation has (name -> path)."""
    if installation is None:
        return {}
    found = {}
    for name in TASK_FILES:
        path = installation.private_ansible_dir / f"{name}.yml"
        if path.is_file():
            found[name] = path
    return found


def ansible_playbook() -> str | None:
    """The installation's ansible-playbook: on PATH, else beside our interpreter."""
    found = shutil.which("ansible-playbook")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.is_file() else None


@dataclass
class TemplatingTasks:
    """Runs the task files of one order's deploy; `runs` keeps what each run said."""

    installation: Installation
    files: dict[str, Path]
    order_vars: dict[str, Any]
    vars_files: Sequence[Path]
    timeout: float
    runs: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, name: str) -> None:
        path = self.files.get(name)
        if path is None:
            return
        playbook = ansible_playbook()
        if playbook is None:
            raise ConfigurationError(f"{path} exists but ansible-playbook is not installed")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="wodmail-tasks-") as tmp:
            play, extra = self._write(Path(tmp), path)
            vault = self._vault_password_file(Path(tmp))
            argv = [playbook, str(play), *self.installation.playbook_args(vault),
                    "-e", f"@{extra}"]
            status, output = _run(argv, Path(tmp), self.timeout)
        hook = f"ansible-playbook {path.name}"
        self.runs.append({"name": hook, "ms": int((time.monotonic() - started) * 1000),
                          "ok": status == 0, "output": output, "user": ""})
        if status != 0:
            why = "timed out" if status is None else f"exited with status {status}"
            raise HookFailed(hook, why, output=output)

    def _vault_password_file(self, folder: Path) -> Path | None:
        """The vault secret, as wodmail read it (checked), in a 0600 file of its own; None
        when the installation has none."""
        if not os.path.lexists(self.installation.vault_secret_file):
            return None
        path = folder / "vault-password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(self.installation.vault.secret())
        return path

    def _write(self, folder: Path, tasks: Path) -> tuple[Path, Path]:
        include = [{"ansible.builtin.include_vars": str(path)} for path in self.vars_files]
        play = [{
            "name": f"wodmail: {tasks.name}",
            "hosts": "all",
            "gather_facts": True,
            "vars": {"VARDIR": "{{ WODANSIBLEDIR }}/{{ WODGROUP }}",
                     "VARPRIVDIR": "{{ WODANSIBLEPRIVDIR }}/{{ WODGROUP }}"},
            "tasks": [*include, {"ansible.builtin.include_tasks": str(tasks)}],
        }]
        play_file = folder / "play.yml"
        play_file.write_text(json.dumps(play), encoding="utf-8")  # JSON is YAML
        extra = folder / "order-vars.json"
        fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(self.order_vars, stream)
        return play_file, extra


def _run(argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    # The daemon's ANSIBLE_* settings pass through, as they would to the admin's own runs.
    env = {key: value for key, value in os.environ.items()
           if key in ("PATH", "HOME", "LANG") or key.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "ANSIBLE_FORCE_COLOR": "0"})
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        return None, scrub_text(raw[-OUTPUT_CAP:].decode("utf-8", "replace"))
    return done.returncode, scrub_text(done.stdout[-OUTPUT_CAP:].decode("utf-8", "replace"))
