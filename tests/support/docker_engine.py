"""A real Docker engine for test appliances (Debian's docker.io 20.10), with local stand-ins
for the lab images WoD's container workshops build on. No registry is reachable from tests.

The engine: `dockerd` started by the session fixture `docker_engine` without systemd, on a
socket and data and exec roots of its own (overlay2, no iptables, no bridge: containers use
host networking, so published `ports:` do nothing and two containers may not take one port),
in a mount namespace of its own (its mounts vanish with it) and a sub-cgroup of the session's
reaped cgroup (support.reaper). An appliance made with `docker=True` (support.appliances)
gets the engine's socket at /run/docker.sock, Debian's docker CLI, the `docker` group for its
students, and docker compose v1 and/or v2 (support.compose_v2). After each test that used it,
every container, network and volume is removed, and every image but the stand-ins.

The images (tests/fixtures/lab-images: Dockerfiles and the stand-in programs) are built on
one base, `docker import` of the appliances' Debian 12 root (support.appliances.PACKAGES:
python3, perl, passwd's useradd, sshd, sudo, tini), once: the engine's data root is kept in
the cache for the next session (a session that finds it held by another uses a scratch one).

- sparklab, mllab, datavisulab, tensorflowlab (`:latest`) stand in for jupyter/all-spark-
  notebook, jupyter/scipy-notebook (with vdom, pyspark) and tensorflow/tensorflow:latest-
  jupyter. Debian, no conda, no Spark, ML or TensorFlow. As in docker-stacks: user jovyan
  (1000, group users 100), HOME /home/jovyan group-writable, /opt/conda/bin first on PATH,
  `tini -g --` and `start-notebook.sh` as entrypoint and command (the real TensorFlow image
  has none of these, nor /opt/conda: the stock Tensorflow101 Dockerfile presumes a
  docker-stacks base). `start-notebook.sh` runs a stand-in Jupyter server: HTTP on $HTTPPORT,
  else 8888 (the real one ignores HTTPPORT and is reached through the published port), a
  random 48-hex token, 200 on / and /api/status with it, 403 without. `jupyter lab list`
  prints `http://HOST:PORT/?token=TOKEN :: DIR` as the real one does; `/opt/conda/bin/
  jupyter-nbconvert --clear-output --inplace` clears the outputs; `git clone URL DIR` copies
  two sample notebooks (with outputs) into DIR and records URL in DIR/.git/config.
- dockerlab:latest stands in for setup-WKSHP-Docker101's CentOS 7 image (sshd, vsftpd, sudo,
  perl, docker-ce: docker in docker): Debian's sshd with fresh host keys, sudo, perl, a
  `docker` group, a vsftpd that does nothing; no docker engine inside.
- postgres:latest and concourse/concourse:7.7.1-ubuntu stand in for the images of the
  Concourse101 compose file: postgres says it is ready and waits; concourse `quickstart`
  serves /api/v1/info on $CONCOURSE_BIND_PORT, else 8080.

A privileged container (Docker101's and Concourse101's compose files ask for one) gets every
capability: runc cannot start it on a host whose own bounding set lacks one (this project's
CI machines lack CAP_SYS_RESOURCE). `privileged_missing()` says so, for tests to skip.

BuildKit's RUN steps need the bridge network this engine lacks: appliances with docker set
DOCKER_BUILDKIT=0 (/etc/environment, /etc/profile.d), so compose v1 and v2 use the classic
builder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from support import appliances, compose_v2, nspawn, reaper
from support.paths import FIXTURES

DOCKERD = Path("/usr/sbin/dockerd")
# Debian's docker.io CLI (20.10), the one a bookworm appliance has; /usr/local/bin/docker may
# be a newer standalone client.
DOCKER_CLI = Path("/usr/bin/docker")
LAB_IMAGES = FIXTURES / "lab-images"
BASE = "wodmail-standin/base:latest"
IMAGES = {
    "jupyter": ("sparklab:latest", "mllab:latest", "datavisulab:latest",
                "tensorflowlab:latest"),
    "dockerlab": ("dockerlab:latest",),
    "postgres": ("postgres:latest",),
    "concourse": ("concourse/concourse:7.7.1-ubuntu",),
}
LIMIT = 300.0


def missing() -> str | None:
    """Why no engine can be started here, or None."""
    why = appliances.missing()
    if why is not None:
        return why
    if not DOCKERD.exists() or not DOCKER_CLI.exists():
        return "Debian's docker.io is not installed (scripts/system-deps.sh installs it as root)"
    return None


def privileged_missing() -> str | None:
    """Why a privileged container cannot start here, or None."""
    bounding = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("CapBnd:"))
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    absent = [bit for bit in range(last + 1) if not int(bounding, 16) >> bit & 1]
    if absent:
        return (f"this host's capability bounding set lacks capabilities {absent} (see "
                "capabilities(7)): runc cannot start a privileged container")
    return None


class DockerEngine:
    """dockerd on `folder`, its images built; `cli` runs Debian's docker CLI against it."""

    def __init__(self, folder: Path, data_root: Path, cgroups: reaper.ReapedCgroup) -> None:
        self.folder = folder
        self.data_root = data_root
        self.socket = folder / "docker.sock"
        self._cgroups = cgroups
        self.log_path = folder / "dockerd.log"
        self.timings: dict[str, float] = {}
        self._keep: set[str] = set()
        started = time.monotonic()
        cgroup = cgroups.child("dockerd")
        # Containers go in cgroups of their own, made by runc under this path in every
        # hierarchy: below the session's reaped cgroup in the unified one, so that they end
        # with it too (without it they would be in /docker/ID, outliving a killed session).
        self.containers_cgroup = f"/{cgroups.path.name}/containers"
        # containerd's sockets are in the exec root: its path must stay short (107 bytes).
        (folder / "exec").mkdir()
        data_root.mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", str(DOCKERD),
                 "--storage-driver=overlay2", "--iptables=false", "--ip6tables=false",
                 "--bridge=none", f"--data-root={data_root}",
                 f"--exec-root={folder / 'exec'}", f"--host=unix://{self.socket}",
                 f"--pidfile={folder / 'dockerd.pid'}", f"--group={appliances.DOCKER_GID}",
                 f"--cgroup-parent={self.containers_cgroup}",
                 "--log-level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=reaper.ReapedCgroup.joiner(cgroup), start_new_session=True,
            )
        self._wait_ready()
        self.timings["start"] = time.monotonic() - started

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + LIMIT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dockerd ended ({self._proc.returncode}): {self.log()}")
            if self.socket.exists() and self.cli("version", check=False).returncode == 0:
                return
            assert time.monotonic() < deadline, f"dockerd not ready in {LIMIT} s: {self.log()}"
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def cli(self, *argv: str, input: bytes | str | None = None, check: bool = True,
            timeout: float = LIMIT, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DOCKER_BUILDKIT": "0",
               "DOCKER_HOST": f"unix://{self.socket}", "HOME": str(self.folder)}
        done = subprocess.run([str(DOCKER_CLI), *argv], input=input, capture_output=True,
                              timeout=timeout, env=env, cwd=cwd,
                              text=not isinstance(input, bytes))
        stdout, stderr = done.stdout, done.stderr
        if isinstance(stdout, bytes):
            stdout, stderr = stdout.decode(errors="replace"), stderr.decode(errors="replace")
        if check and done.returncode != 0:
            raise AssertionError(f"docker {list(argv)} failed ({done.returncode}):\n"
                                 f"{stdout}\n{stderr}")
        return subprocess.CompletedProcess(done.args, done.returncode, stdout, stderr)

    # -- images

    def build_images(self) -> None:
        """The base from the appliances' root tarball, then every stand-in image; none of it
        if a data root kept from an earlier session has them all."""
        tags = [BASE, *(tag for group in IMAGES.values() for tag in group)]
        self._forget_all_but(tags)
        if self.cli("image", "inspect", *tags, check=False).returncode == 0:
            self._keep = set(self._image_ids())
            self.timings["images kept"] = 0.0
            return
        started = time.monotonic()
        tarball, _ = nspawn.debootstrap_tarball("appliance", appliances.PACKAGES)
        with subprocess.Popen(["zstd", "-dc", str(tarball)], stdout=subprocess.PIPE) as unzip:
            env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": f"unix://{self.socket}",
                   "HOME": str(self.folder)}
            done = subprocess.run([str(DOCKER_CLI), "import", "-", BASE], stdin=unzip.stdout,
                                  capture_output=True, text=True, timeout=LIMIT, env=env)
        assert done.returncode == 0, f"docker import failed: {done.stderr}"
        self.timings["import"] = time.monotonic() - started
        for kind, tags in IMAGES.items():
            started = time.monotonic()
            names = [arg for tag in tags for arg in ("-t", tag)]
            self.cli("build", "-q", "--build-arg", f"BASE={BASE}", "-f",
                     str(LAB_IMAGES / f"{kind}.Dockerfile"), *names, str(LAB_IMAGES))
            self.timings[f"build {kind}"] = time.monotonic() - started
        self._keep = set(self._image_ids())

    def _forget_all_but(self, tags: list[str]) -> None:
        """What a session killed mid-test left in a kept data root: containers, networks,
        volumes, images other than `tags`."""
        self._keep = set(self._image_ids())
        self.reset()
        listed = self.cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        others = [tag for tag in listed if tag not in tags and "<none>" not in tag]
        dangling = self.cli("images", "-q", "--filter", "dangling=true").stdout.split()
        if others or dangling:
            self.cli("rmi", "-f", *others, *dangling, check=False)

    def _image_ids(self) -> list[str]:
        return self.cli("images", "-aq", "--no-trunc").stdout.split()

    # -- appliances

    def appliance_mounts(self, compose: Sequence[str]) -> list[tuple[str, str]]:
        """What an appliance bind-mounts: host path, path inside."""
        mounts = [(str(self.socket), "/run/docker.sock"), (str(DOCKER_CLI), "/usr/bin/docker")]
        if "v2" in compose:
            why = compose_v2.missing()
            if why is not None:
                pytest.skip(why)
            plugin, fetched = compose_v2.plugin()
            if fetched:
                print(f"compose v2 plugin fetched and verified in {fetched:.1f} s")
            mounts.append((str(plugin), "/usr/libexec/docker/cli-plugins/docker-compose"))
        return mounts

    # -- between tests, and at the end

    def reset(self) -> None:
        """Remove every container, network and volume, and every image but the stand-ins."""
        containers = self.cli("ps", "-aq").stdout.split()
        if containers:
            self.cli("rm", "-f", "-v", *containers)
        images = self.new_images()
        if images:
            self.cli("rmi", "-f", *images, check=False)
        self.cli("network", "prune", "-f")
        self.cli("volume", "prune", "-f")

    def new_images(self) -> list[str]:
        """IDs of the images that are not the stand-ins (those the tests built)."""
        return [i for i in self._image_ids() if i not in self._keep]

    def containers(self) -> list[dict[str, str]]:
        """Every container, running or not, as `docker ps -a` sees it (Names, Image, State...)."""
        out = self.cli("ps", "-a", "--format", "{{json .}}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                self.reset()
        finally:
            reaper.kill(self._cgroups.path / "dockerd")
            reaper.kill(self._cgroups.path / "containers")
            self._proc.wait(timeout=LIMIT)
            reaper.remove_v1_twins(self._cgroups.path.name)


def _images_key() -> str:
    """What the images are made of: the root tarball and tests/fixtures/lab-images."""
    tarball, _ = nspawn.debootstrap_tarball("appliance", appliances.PACKAGES)
    digest = hashlib.sha256(f"{tarball.name} {tarball.stat().st_mtime_ns}".encode())
    for path in sorted(LAB_IMAGES.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(LAB_IMAGES)} {path.stat().st_mode:o}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _data_root(scratch: Path) -> Iterator[Path]:
    """The engine's data root: the one kept in the cache for these images, whose images later
    sessions reuse; a scratch one if another session holds that. Data roots of other images
    that no session holds are deleted."""
    cache = nspawn.cache_dir()
    key = _images_key()
    held = None
    mine = cache / f"docker-data-{key}.lock"
    for lock_path in sorted({*cache.glob("docker-data-*.lock"), mine}):
        lock = lock_path.open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if lock_path == mine:
            held = lock
            continue
        shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        lock.close()
    try:
        yield cache / f"docker-data-{key}" if held else scratch
    finally:
        if held:
            held.close()


@pytest.fixture(scope="session")
def docker_engine(appliance_root: appliances.ApplianceRoot,
                  appliance_cgroups: reaper.ReapedCgroup,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    why = missing()
    if why is not None:
        pytest.skip(why)
    # A short folder: the socket's path must fit in 107 bytes.
    folder = Path(tmp_path_factory.mktemp("dockerd"))
    with _data_root(folder / "data") as data_root:
        try:
            engine = DockerEngine(folder, data_root, appliance_cgroups)
        except RuntimeError as error:
            pytest.skip(f"dockerd cannot start here: {error}")
        try:
            engine.build_images()
            print("docker engine: " + ", ".join(f"{k} {v:.1f} s"
                                                for k, v in engine.timings.items()))
            yield engine
        finally:
            engine.close()
            shutil.rmtree(folder, ignore_errors=True)
