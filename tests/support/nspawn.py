"""A real systemd (Debian 12's 252) as PID 1 of a `systemd-nspawn` container, for the unit's
end-to-end test.

The root file system is built once by debootstrap from Debian's package registry and cached
as a compressed tarball (~/.cache/wodmail, or $WODMAIL_CACHE); every boot unpacks it afresh
and runs it with --volatile=overlay. This host's PID 1 is not systemd, so nspawn is started
in a cgroup of its own (cgroup v2, the unified hierarchy: tests/support/reaper.py); the
container, and everything it started, ends by writing 1 to that cgroup's `cgroup.kill`: at
teardown, and, if the test process is killed, by a reaper that waits on a pipe only the test
process holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from support import reaper

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,procps"
LIMIT = 120.0


def cache_dir() -> Path:
    return Path(os.environ.get("WODMAIL_CACHE", Path.home() / ".cache" / "wodmail"))


def missing() -> str | None:
    """Why a container cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "booting a systemd-nspawn container needs root"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "zstd"):
        if shutil.which(tool) is None:
            return (f"{tool} is not installed (scripts/system-deps.sh installs debootstrap, "
                    "systemd-container and zstd when run as root)")
    return reaper.missing()


def rootfs_tarball() -> tuple[Path, float]:
    """The cached rootfs tarball, built if absent; and the seconds spent building it (0)."""
    return debootstrap_tarball("nspawn", PACKAGES)


def debootstrap_tarball(prefix: str, packages: str) -> tuple[Path, float]:
    """A Debian bookworm minbase root with `packages` (comma-separated), as a zstd tarball in
    the cache, built by debootstrap if absent; and the seconds spent building it (0)."""
    tarball = cache_dir() / f"{prefix}-{SUITE}-{packages.replace(',', '_')}.tar.zst"
    if tarball.exists():
        return tarball, 0.0
    started = time.monotonic()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    build = tarball.parent / f"rootfs-build-{os.getpid()}"
    try:
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={packages}",
                               SUITE, str(build), MIRROR], capture_output=True, timeout=1800)
        if done.returncode != 0:
            raise AssertionError(f"debootstrap failed ({done.returncode}):\n"
                                 f"{done.stdout.decode(errors='replace')[-3000:]}")
        partial = tarball.with_suffix(f".partial-{os.getpid()}")
        subprocess.run(["tar", "-C", str(build), "--zstd", "-cf", str(partial), "."],
                       check=True, timeout=600)
        partial.rename(tarball)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return tarball, time.monotonic() - started


class Container:
    """A booted container; `run` executes a command inside with nsenter."""

    def __init__(self, rootfs: Path, name: str) -> None:
        self.rootfs = rootfs
        self._reaped = reaper.ReapedCgroup(name)
        self.cgroup = self._reaped.path
        self.log_path = rootfs.parent / "boot.log"
        into_cgroup = reaper.ReapedCgroup.joiner(self.cgroup)

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(rootfs), "-b", "--register=no", "--keep-unit",
                 "--private-network", "--volatile=overlay"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=into_cgroup,
                start_new_session=True,
            )
        self.pid = self._wait_init()
        self.wait_for(lambda: self.run("test", "-S", "/run/systemd/private",
                                       check=False).returncode == 0, "systemd's private bus")

    def _wait_init(self) -> int:
        scope = self.cgroup / "payload" / "init.scope" / "cgroup.procs"
        deadline = time.monotonic() + LIMIT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited:\n{self.log()}")
            try:
                pids = scope.read_text().split()
            except OSError:
                pids = []
            if pids:
                return int(pids[0])
            assert time.monotonic() < deadline, f"no container init:\n{self.log()}"
            time.sleep(0.1)

    def wait_for(self, condition, what: str, limit: float = LIMIT) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, f"waited {limit} s for {what}"
            time.sleep(0.1)

    def run(self, *argv: str, check: bool = True, timeout: float = LIMIT,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", "env", "-i",
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *argv],
            capture_output=True, text=True, timeout=timeout, input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-P", prop, unit).stdout.strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        self._reaped.close()
        try:
            self.proc.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def container_name(prefix: str, tag: str) -> str:
    """A container (and cgroup) name no other test session uses at the same time: it
    carries the test process's pid, which `leftovers` reads back."""
    return f"{prefix}{os.getpid()}-{tag}"


def leftovers(prefix: str) -> None:
    """Containers of an earlier run its reaper could not end (the machine rebooted mid-run
    cannot leave any; a reaper killed with the test can): end them now. A container is named
    `<prefix><pid>-...` after the test process holding it; those of a test process still
    running (another session on this machine) are left alone."""
    reaper.leftovers(prefix)
