"""ansible-vault for another local user (a stock script's WODUSER), as the stock scripts run
it: `ansible-vault encrypt_string ...` on that user's PATH.

Our own interpreter and site-packages often sit where that user cannot go (pyenv's under
/root/.pyenv, 0700; a venv in a 0700 clone), so `AnsibleForUser` copies ansible-core and its
dependencies into a temp folder everyone can read, and finds a python of our major.minor
(their compiled parts are built for it) the user can run. Root only: the checks run as
that user.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

LIMIT = 120.0


class Unavailable(Exception):
    """Why the user cannot run ansible-core here (the caller skips with it)."""


def run_as(uid: int, gid: int, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Runs `argv` as uid:gid (no supplementary groups), from /, with a bare environment."""
    return subprocess.run(
        argv, user=uid, group=gid, extra_groups=[], cwd="/", text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **env},
        stdin=subprocess.DEVNULL, capture_output=True, timeout=LIMIT, check=False,
    )


def interpreter_for(uid: int, gid: int) -> str:
    """A python of our own major.minor that the user can run: ours if its folders let the
    user in, else a system one; Unavailable names what was tried."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = dict.fromkeys((
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
    ))
    same_version = f"import sys; sys.exit(sys.version_info[:2] != {sys.version_info[:2]})"
    tried = []
    for candidate in candidates:
        try:
            run = run_as(uid, gid, [candidate, "-c", same_version])
        except OSError as exc:
            tried.append(f"{candidate}: {exc.strerror}")
            continue
        if run.returncode == 0:
            return candidate
        tried.append(f"{candidate}: not python {version} ({run.stderr.strip() or 'exit 1'})")
    raise Unavailable(f"no python {version} uid {uid} can run ansible-core with; tried "
                      f"{'; '.join(tried)}")


def distributions(name: str) -> list[importlib.metadata.Distribution]:
    """Distribution `name` and everything it requires (extras left out), as installed."""
    from packaging.requirements import Requirement  # an ansible-core dependency
    from packaging.utils import canonicalize_name

    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        key = canonicalize_name(dist.metadata["Name"])
        if key in found:
            continue
        found[key] = dist
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


@dataclass
class AnsibleForUser:
    """ansible-core copied where uid can read it, with an interpreter uid can run."""

    folder: Path
    interpreter: str

    @property
    def site(self) -> Path:
        return self.folder / "site-packages"

    @classmethod
    def make(cls, uid: int, gid: int) -> AnsibleForUser:
        """Unavailable when the user cannot run it here."""
        interpreter = interpreter_for(uid, gid)
        made = cls(Path(tempfile.mkdtemp(prefix="wodmail-user-ansible-")), interpreter)
        try:
            made._copy()
            made._check(uid, gid)
        except BaseException:
            made.close()
            raise
        return made

    def _copy(self) -> None:
        self.folder.chmod(0o755)
        for dist in distributions("ansible-core"):
            for file in dist.files or ():
                if ".." in file.parts:  # console scripts, outside site-packages
                    continue
                target = self.site / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dist.locate_file(file), target)
        for path in (self.site, *self.site.rglob("*")):
            path.chmod(0o755 if path.is_dir() else path.stat().st_mode & 0o777 | 0o444)

    def _check(self, uid: int, gid: int) -> None:
        reach = run_as(uid, gid, [self.interpreter, "-c", "import os, sys; "
                                  "sys.exit(not os.access(sys.argv[1], os.R_OK | os.X_OK))",
                                  str(self.site)])
        if reach.returncode != 0:
            raise Unavailable(f"uid {uid} cannot enter {self.site}: the temp folder "
                              f"{tempfile.gettempdir()} must let others in (TMPDIR)")
        home = self.folder / "home"  # ansible's constants make ~/.ansible on import
        home.mkdir()
        os.chown(home, uid, gid)
        # cryptography too: ansible's vault code would just note that it is missing.
        imports = run_as(uid, gid, [self.interpreter, "-c", "import ansible.cli.vault, "
                                    "cryptography.hazmat.primitives.ciphers"],
                         PYTHONPATH=str(self.site), HOME=str(home))
        assert imports.returncode == 0, (
            f"ansible-core copied to {self.site} does not import as uid {uid} with "
            f"{self.interpreter}:\n{imports.stderr}"
        )

    def write_ansible_vault(self, bin_dir: Path) -> Path:
        """`bin_dir/ansible-vault` running this ansible-core (mode 0755)."""
        bin_dir.mkdir(parents=True, exist_ok=True)
        script = bin_dir / "ansible-vault"
        script.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            PYTHONPATH="{self.site}" exec {self.interpreter} -c 'import sys
            from ansible.cli.vault import main
            sys.argv[0] = "ansible-vault"; sys.exit(main())' "$@"
            """))
        script.chmod(0o755)
        return script

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
