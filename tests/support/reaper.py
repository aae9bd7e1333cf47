"""A cgroup v2 that holds what a test started (containers, appliances, a Docker engine) and
whose every process is killed at teardown, and also when the test process dies however it
dies: a reaper process waits on a pipe only the test process holds, and when `read` returns
it writes 1 to the cgroup's `cgroup.kill`.

Sub-cgroups (`child`) let one part be killed alone (an appliance stopped and started again).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

LIMIT = 120.0
# Kill, then remove the emptied cgroups (the killed processes leave them within moments).
REAP = """read _ignored
{ echo 1 > "$1/cgroup.kill"; } 2>/dev/null || exit 0
for _ in $(seq 100); do
  find "$1" -depth -type d -exec rmdir {} + 2>/dev/null && exit 0
  sleep 0.1
done
"""


def unified_root() -> Path | None:
    """Where cgroup v2 is mounted (pure v2, or the unified part of a hybrid host)."""
    for path in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (path / "cgroup.procs").exists() and (path / "cgroup.subtree_control").exists():
            return path
    return None


def kill_file_below(root: Path) -> bool:
    """Do this kernel's cgroups have `cgroup.kill` (5.14 and later)?"""
    probe = root / f"wodmail-probe-{os.getpid()}"
    try:
        probe.mkdir()
        return (probe / "cgroup.kill").exists()
    except OSError:
        return False
    finally:
        if probe.exists():
            probe.rmdir()


def missing() -> str | None:
    """Why no reaped cgroup can be made here, or None."""
    root = unified_root()
    if root is None or not (root / "cgroup.kill").exists() and not kill_file_below(root):
        return "no cgroup v2 hierarchy with cgroup.kill (kernel >= 5.14) to hold the processes"
    return None


def kill(cgroup: Path) -> None:
    """Kill every process in `cgroup` and below, and remove the cgroups once they are empty."""
    try:
        (cgroup / "cgroup.kill").write_text("1")
    except OSError:
        pass
    remove_cgroup(cgroup)


def remove_cgroup(cgroup: Path) -> None:
    deadline = time.monotonic() + LIMIT
    for path in sorted((p for p in cgroup.rglob("*") if p.is_dir()), reverse=True) + [cgroup]:
        while path.exists():
            try:
                path.rmdir()
            except OSError:
                # Its processes are still dying after cgroup.kill.
                assert time.monotonic() < deadline, f"cgroup {path} still busy"
                time.sleep(0.1)


def remove_v1_twins(name: str) -> None:
    """On a hybrid host, the empty cgroups named `name` that runc made in the v1 hierarchies
    (for containers under a `--cgroup-parent` of that name): removed, best effort."""
    root = unified_root()
    if root is None or root == Path("/sys/fs/cgroup"):
        return
    for twin in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        for path in sorted((p for p in twin.rglob("*") if p.is_dir()), reverse=True) + [twin]:
            try:
                path.rmdir()
            except OSError:
                pass


def leftovers(prefix: str) -> None:
    """Cgroups `<prefix><pid>...` of an earlier test process that is gone (its reaper was
    killed with it): end them now. Those of a test session still running are left alone."""
    root = unified_root()
    if root is None:
        return
    names = {path.name for path in root.glob(f"{prefix}*")}
    if root != Path("/sys/fs/cgroup"):
        names |= {path.name for path in Path("/sys/fs/cgroup").glob(f"*/{prefix}*")}
    for name in sorted(names):
        owner = name[len(prefix):].split("-")[0]
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue
        if (root / name).exists():
            kill(root / name)
        remove_v1_twins(name)


class ReapedCgroup:
    """A cgroup named `name` under the unified root, reaped as the module docstring says."""

    def __init__(self, name: str) -> None:
        root = unified_root()
        assert root is not None, missing()
        self.path = root / name
        self.path.mkdir()
        read_end, self._reaper_pipe = os.pipe()
        self._reaper = subprocess.Popen(
            ["sh", "-c", REAP, "wodmail-reaper", str(self.path)],
            stdin=read_end, start_new_session=True,
        )
        os.close(read_end)

    def child(self, name: str) -> Path:
        """A fresh sub-cgroup (one that is there already is killed and made again)."""
        path = self.path / name
        if path.exists():
            kill(path)
        path.mkdir()
        return path

    @staticmethod
    def joiner(cgroup: Path) -> Callable[[], None]:
        """A `preexec_fn` that moves the new process into `cgroup` before it runs."""
        procs = str(cgroup / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as file:
                file.write("0")

        return join

    def close(self) -> None:
        kill(self.path)
        os.close(self._reaper_pipe)
        self._reaper.wait(timeout=LIMIT)
