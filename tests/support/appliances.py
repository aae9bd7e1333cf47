"""Real appliances for tests: the real OpenSSH sshd of a Debian 12 root, reached over loopback,
as WoD's backend reaches a workshop's appliance (its admin account WODUSER, key-based, with
NOPASSWD sudo; the students `studentN` with uid UIDBASE+N and their homes; `/etc/skel`;
apache htpasswd files; for container workshops a Docker engine and docker compose).

How one is made (all of it as root, none of it touching the host's own accounts):

- The root file system: debootstrap's minbase of bookworm with what the stock appliance
  scripts use (sshd, sudo, rsync, htpasswd, python3, ps, chpasswd, getent, install, tar,
  perl, docker-compose v1), built once and cached as a zstd tarball (`nspawn.cache_dir()`),
  and unpacked once beside it: the lower dir of every appliance, of every session, never
  written to. Its host keys are removed: every appliance gets keys of its own.
- An appliance: an overlayfs (lower = that root, upper = the appliance's own folder) with its
  own /etc/passwd, shadow, group, sudoers, hostname, host key and homes, written into the
  upper folder before the first start. `/usr/sbin/sshd -D` runs chrooted into the overlay in
  mount, pid and uts namespaces of its own (own hostname, `ps` sees only the appliance) but in
  the host's network namespace, listening on its own loopback address 127.0.1.X port 22 (all
  of 127.0.0.0/8 is local on Linux). /proc, a small /dev (null, zero, full, random, urandom,
  tty, a devpts instance of its own, shm) and a tmpfs /run are mounted inside; the mounts live
  in the appliance's mount namespace and vanish with its last process.
- Every appliance runs in a sub-cgroup of the session's reaped cgroup (support.reaper):
  `stop()` kills its cgroup; the session's end, or the test process dying, kills them all.
- An address is held with a lock file (/run/wodmail-appliances/ADDRESS.lock) for as long as
  its appliance exists, so concurrent test sessions on one machine never pick the same one.

With `docker=True` (support.docker_engine) the session's Docker engine socket is bind-mounted
at /run/docker.sock, Debian's docker CLI (the host's /usr/bin/docker of docker.io) at
/usr/bin/docker, the students are in the group `docker`, and the compose versions asked for
are there: v1 `docker-compose` (bookworm's 1.29.2, in the root) and v2 as a CLI plugin
(trixie's 2.26.1). Containers run on the host's engine, so they are not inside the
appliance: a volume path in a compose file is a path of the host.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support import nspawn, reaper

PACKAGES = ("openssh-server,openssh-client,sudo,rsync,apache2-utils,python3,procps,passwd,"
            "docker-compose,tini")
LIMIT = 120.0
LOCKS = Path("/run/wodmail-appliances")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_PREFIX = "wodmail-appliances-"
DOCKER_GID = 990
ADMIN_UID = 1000
DAYS = int(time.time() // 86400)
# Bump when prepare_root changes what it does to the unpacked root.
ROOT_EDITION = 1

SSHD_CONFIG = """\
# wodmail test appliance {hostname}
ListenAddress {address}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
{extra_host_keys}PidFile /run/sshd.pid
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
{options}"""

# Runs as PID 1 of the appliance's namespaces: mounts its world, then becomes sshd.
INIT = r"""
set -eu
lower=$1 upper=$2 work=$3 merged=$4 name=$5
shift 5
hostname "$name"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
mount -t tmpfs -o mode=0755,nosuid,size=4m appliance-dev "$merged/dev"
for node in null zero full random urandom tty; do
  touch "$merged/dev/$node"
  mount --bind "/dev/$node" "$merged/dev/$node"
done
mkdir "$merged/dev/pts" "$merged/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$merged/dev/pts"
ln -s pts/ptmx "$merged/dev/ptmx"
ln -s /proc/self/fd "$merged/dev/fd"
ln -s /proc/self/fd/0 "$merged/dev/stdin"
ln -s /proc/self/fd/1 "$merged/dev/stdout"
ln -s /proc/self/fd/2 "$merged/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev appliance-shm "$merged/dev/shm"
mount -t tmpfs -o mode=0755,nosuid,nodev appliance-run "$merged/run"
mkdir -m 0755 "$merged/run/sshd" "$merged/run/lock"
# Bind mounts asked for, as pairs: a host path, and where it goes in the appliance.
while [ $# -ge 2 ]; do
  source=$1 target=$merged$2
  shift 2
  mkdir -p "$(dirname "$target")"
  [ -e "$target" ] || touch "$target"
  mount --bind "$source" "$target"
  case $source in *.sock) ;; *) mount -o remount,bind,ro "$target" ;; esac
done
exec chroot "$merged" /usr/sbin/sshd -D -E /var/log/sshd.log
"""


def missing() -> str | None:
    """Why no appliance can be started here, or None."""
    if os.geteuid() != 0:
        return "appliances need root (overlayfs, namespaces, chroot, accounts of other uids)"
    for tool in ("unshare", "nsenter", "debootstrap", "zstd", "ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            return (f"{tool} is not installed (scripts/system-deps.sh installs util-linux, "
                    "debootstrap, zstd and openssh-client when run as root)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "this kernel has no overlayfs"
    return reaper.missing()


# -- keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """An ssh key pair in files: `private` (0600) and `private.pub`."""

    private: Path
    public: str

    @property
    def public_path(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")


def make_keypair(folder: Path, name: str = "id_ed25519", kind: str = "ed25519",
                 comment: str = "wodadmin@backend") -> KeyPair:
    """A new key pair without a passphrase (`kind`: ed25519, rsa, ecdsa) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / name
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(private)]
    if kind == "rsa":
        argv[4:4] = ["-b", "3072"]
    subprocess.run(argv, check=True, capture_output=True, timeout=LIMIT)
    return KeyPair(private, private.with_name(name + ".pub").read_text().strip())


def fingerprint(public_key: str) -> str:
    """`SHA256:...` of an OpenSSH public key line, as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# -- the root file system ----------------------------------------------------------------


@dataclass(frozen=True)
class ApplianceRoot:
    """The unpacked root every appliance of the session shares, read-only, as its lower dir."""

    lower: Path
    built_seconds: float
    unpack_seconds: float


def prepare_root() -> ApplianceRoot:
    """The root unpacked in the cache beside its tarball (once: later sessions, and several
    at once, share it; nothing ever writes to it), its tarball built first if need be."""
    tarball, built = nspawn.debootstrap_tarball("appliance", PACKAGES)
    started = time.monotonic()
    stem = tarball.name.removesuffix(".tar.zst")
    # The tarball's time: a rebuilt tarball is unpacked again.
    lower = tarball.with_name(f"{stem}.root-{ROOT_EDITION}-{tarball.stat().st_mtime_ns}")
    if not lower.exists():
        partial = lower.with_name(f"{lower.name}.partial-{os.getpid()}")
        partial.mkdir()
        try:
            subprocess.run(["tar", "-C", str(partial), "--zstd", "-xf", str(tarball)],
                           check=True, timeout=600)
            for key in (partial / "etc" / "ssh").glob("ssh_host_*"):
                key.unlink()
            # The package's config says nothing about appliances; each one writes its own.
            (partial / "etc" / "ssh" / "sshd_config").unlink()
            (partial / "etc" / "hostname").unlink(missing_ok=True)
            partial.rename(lower)
        except OSError:
            if not lower.exists():
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return ApplianceRoot(lower, built, time.monotonic() - started)


# -- addresses ---------------------------------------------------------------------------


class AddressLock:
    """127.0.1.X held for one appliance: a lock file no other process (or session) can take,
    and port 22 free on it."""

    def __init__(self, address: str | None) -> None:
        LOCKS.mkdir(mode=0o700, exist_ok=True)
        candidates = [address] if address else [f"127.0.1.{n}" for n in range(10, 255)]
        for candidate in candidates:
            file = (LOCKS / f"{candidate}.lock").open("w")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                continue
            if _port_free(candidate, 22):
                self.address, self._file = candidate, file
                return
            file.close()
        raise AssertionError(f"no free appliance address among {candidates[0]}..."
                             f"{candidates[-1]} (held by another test session, or port 22 taken)")

    def release(self) -> None:
        self._file.close()


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


# -- an appliance ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What an appliance holds; `appliance_factory` takes these as keyword arguments."""

    admin_pubkey: str
    address: str | None = None
    hostname: str | None = None
    students: Iterable[int] = range(1, 6)
    uid_base: int = 2000
    gid_base: int | None = None
    students_dir: str = "/student"
    admin: str = "wodadmin"
    docker: bool = False
    compose: tuple[str, ...] = ("v1", "v2")
    htpasswd_files: tuple[str, ...] = ()
    skel: Mapping[str, str] = field(default_factory=dict)
    host_key_types: tuple[str, ...] = ("ed25519",)
    sshd_options: Mapping[str, str] = field(default_factory=dict)


class Appliance:
    """One appliance. Its state (files, accounts, host keys) lives in its upper folder and
    outlives `stop()`: `start()` brings the same appliance back."""

    def __init__(self, spec: Spec, root: ApplianceRoot, folder: Path,
                 cgroups: reaper.ReapedCgroup, mounts: Sequence[tuple[str, str]] = ()) -> None:
        self.spec = spec
        self.students = list(spec.students)
        self._lock = AddressLock(spec.address)
        self.address = self._lock.address
        self.hostname = spec.hostname or f"appliance-{self.address.rsplit('.', 1)[1]}"
        self._root, self._cgroups, self._mounts = root, cgroups, list(mounts)
        self.folder = folder
        self.upper, self._work, self._merged = folder / "upper", folder / "work", folder / "merged"
        for path in (self.upper, self._work, self._merged):
            path.mkdir(parents=True)
        # The overlay's root takes the upper folder's mode: students must be able to cross it.
        self.upper.chmod(0o755)
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.start_seconds = 0.0
        _Provisioner(self).write()
        self._write_host_keys()

    # -- identity

    @property
    def host_public_key(self) -> str:
        """The ed25519 host key's public line (`ssh-ed25519 AAAA... root@HOST`)."""
        return (self.upper / "etc/ssh/ssh_host_ed25519_key.pub").read_text().strip()

    @property
    def host_key_fingerprint(self) -> str:
        return fingerprint(self.host_public_key)

    def known_hosts_line(self) -> str:
        key_type, blob = self.host_public_key.split()[:2]
        return f"{self.address} {key_type} {blob}"

    @property
    def admin(self) -> str:
        return self.spec.admin

    def student(self, n: int) -> str:
        return f"student{n}"

    def uid(self, n: int) -> int:
        return self.spec.uid_base + n

    def home(self, n: int) -> str:
        return f"{self.spec.students_dir}/student{n}"

    def ssh_argv(self, key: KeyPair | Path, user: str | None = None,
                 known_hosts: Path | None = None) -> list[str]:
        """The OpenSSH client's argv to run a command here (append the command): batch mode,
        the host key checked against `known_hosts` when given, else not checked."""
        private = key.private if isinstance(key, KeyPair) else key
        checking = (["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
                    if known_hosts else
                    ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"])
        return ["ssh", "-F", "none", "-i", str(private), "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR",
                *checking, f"{user or self.admin}@{self.address}"]

    # -- life

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.hostname} is running already"
        started = time.monotonic()
        log_offset = len(self.log)
        cgroup = self._cgroups.child(self.hostname)
        mounts = [arg for pair in self._mounts for arg in pair]
        with (self.folder / "init.log").open("ab") as log:
            self._proc = subprocess.Popen(
                ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
                 "sh", "-c", INIT, "appliance-init", str(self._root.lower), str(self.upper),
                 str(self._work), str(self._merged), self.hostname, *mounts],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=reaper.ReapedCgroup.joiner(cgroup), start_new_session=True,
            )
        self._wait_listening(log_offset)
        self.pid = self._init_pid()
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Kill the appliance, every process in it, as a power cut would."""
        if self._proc is None:
            return
        reaper.kill(self._cgroups.path / self.hostname)
        self._proc.wait(timeout=LIMIT)
        self._proc, self.pid = None, 0

    def close(self) -> None:
        self.stop()
        self._lock.release()

    def _wait_listening(self, log_offset: int) -> None:
        """Until sshd says it listens (in the part of its log this start wrote: a probe
        connection would leave a line of its own in the log the tests read)."""
        deadline = time.monotonic() + LIMIT
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"{self.hostname} ended ({self._proc.returncode}):\n"
                                     f"{self.init_log}\n{self.log}")
            if f"Server listening on {self.address} port 22." in self.log[log_offset:]:
                return
            assert time.monotonic() < deadline, (f"{self.hostname}: sshd not listening after "
                                                 f"{LIMIT} s:\n{self.init_log}\n{self.log}")
            time.sleep(0.02)

    def _init_pid(self) -> int:
        """The host's pid of the appliance's PID 1 (sshd): unshare's one child."""
        assert self._proc is not None
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text()
        return int(children.split()[0])

    # -- looking inside

    def run(self, *argv: str, user: str | None = None, input: str | bytes | None = None,
            check: bool = True, timeout: float = LIMIT,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the running appliance (its root, namespaces, hostname), as root
        or as `user` (a login shell of that user: its groups, HOME, PATH); text output."""
        assert self.running, f"{self.hostname} is not running"
        variables = [f"{k}={v}" for k, v in {"PATH": PATH, "HOME": "/root", **(env or {})}.items()]
        # As `su - USER -c` does (the stock scripts' way): a login shell, the user's HOME.
        command = ["runuser", "-l", user, "-c", shlex.join(argv)] if user else list(argv)
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-u", "-p", "-r", "-w",
             "env", "-i", *variables, *command],
            capture_output=True, timeout=timeout, input=input,
            text=not isinstance(input, bytes),
        )
        if isinstance(result.stdout, bytes):
            result = subprocess.CompletedProcess(result.args, result.returncode,
                                                 result.stdout.decode(errors="replace"),
                                                 result.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"{self.hostname}: {list(argv)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def sh(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, **kwargs)

    def read(self, path: str) -> str:
        return self.run("cat", "--", path).stdout

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0

    def processes(self) -> list[str]:
        """The command lines of every process in the appliance (`ps -eo args`)."""
        return self.run("ps", "-eo", "args", "--no-headers").stdout.splitlines()

    def shadow(self, user: str) -> str:
        """The user's password field in /etc/shadow."""
        return self.run("getent", "shadow", user).stdout.split(":")[1]

    def password_ok(self, user: str, password: str) -> bool:
        """Does the user's /etc/shadow hash match `password`? (the appliance's libcrypt,
        which knows yescrypt, what bookworm's chpasswd writes; the password on stdin)"""
        check = ("import crypt, spwd, sys\n"
                 "h = spwd.getspnam(sys.argv[1]).sp_pwdp\n"
                 "sys.exit(0 if crypt.crypt(sys.stdin.read(), h) == h else 1)\n")
        return self.run("python3", "-W", "ignore", "-c", check, user, input=password,
                        check=False).returncode == 0

    def htpasswd_ok(self, path: str, user: str, password: str) -> bool:
        """Does the apache htpasswd file hold `password` for `user`? (password on stdin)"""
        return self.run("htpasswd", "-v", "-i", path, user, input=password,
                        check=False).returncode == 0

    @property
    def log(self) -> str:
        """sshd's log (kept across stop and start)."""
        path = self.upper / "var/log/sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def init_log(self) -> str:
        path = self.folder / "init.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- faults

    def regenerate_host_key(self) -> str:
        """New host keys (as a reinstalled appliance has); restarts sshd if it was running.
        Returns the new ed25519 public key."""
        was_running = self.running
        self.stop()
        self._write_host_keys()
        if was_running:
            self.start()
        return self.host_public_key

    def break_sudo(self) -> None:
        """The admin keeps sudo but loses NOPASSWD: `sudo -n` fails, asking for a password."""
        self._sudoers(f"{self.admin} ALL=(ALL:ALL) ALL\n")

    def restore_sudo(self) -> None:
        self._sudoers(f"{self.admin} ALL=(ALL:ALL) NOPASSWD: ALL\n")

    def _sudoers(self, rule: str) -> None:
        self.run("install", "-m", "0440", "/dev/stdin", f"/etc/sudoers.d/{self.admin}",
                 input=rule)

    def _write_host_keys(self) -> None:
        ssh = self.upper / "etc" / "ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        for kind in self.spec.host_key_types:
            key = ssh / f"ssh_host_{kind}_key"
            key.unlink(missing_ok=True)
            key.with_name(key.name + ".pub").unlink(missing_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C",
                            f"root@{self.hostname}", "-f", str(key)],
                           check=True, capture_output=True, timeout=LIMIT)


class _Provisioner:
    """Writes an appliance's accounts, homes, sudoers and config into its upper folder, as
    WoD's setup_appliance playbooks leave a real one (before its first start)."""

    def __init__(self, appliance: Appliance) -> None:
        self.a = appliance
        self.spec = appliance.spec
        self.lower = appliance._root.lower
        self.upper = appliance.upper

    def write(self) -> None:
        spec, gid_base = self.spec, self.spec.gid_base
        gid_base = spec.uid_base if gid_base is None else gid_base
        students = self.a.students
        passwd = [f"{spec.admin}:x:{ADMIN_UID}:{ADMIN_UID}:WoD admin:/home/{spec.admin}:/bin/bash"]
        passwd += [f"student{n}:x:{spec.uid_base + n}:{gid_base + n}:student{n}:"
                   f"{spec.students_dir}/student{n}:/bin/bash" for n in students]
        shadow = [f"{spec.admin}:*:{DAYS}:0:99999:7:::"]
        shadow += [f"student{n}:!:{DAYS}:0:99999:7:::" for n in students]
        group = [f"{spec.admin}:x:{ADMIN_UID}:"]
        group += [f"student{n}:x:{gid_base + n}:" for n in students]
        gshadow = [f"{spec.admin}:!::"] + [f"student{n}:!::" for n in students]
        if spec.docker:
            # The stock create scripts run `docker ps` as WODUSER without sudo.
            members = ",".join([spec.admin, *(f"student{n}" for n in students)])
            group.append(f"docker:x:{DOCKER_GID}:{members}")
            gshadow.append(f"docker:!::{members}")
        for name, lines in (("passwd", passwd), ("shadow", shadow), ("group", group),
                            ("gshadow", gshadow)):
            self._append_etc(name, lines)
        self._file("etc/hostname", f"{self.a.hostname}\n")
        self._file("etc/hosts", f"127.0.0.1\tlocalhost\n{self.a.address}\t{self.a.hostname}\n")
        options = "".join(f"{k} {v}\n" for k, v in spec.sshd_options.items())
        extra = "".join(f"HostKey /etc/ssh/ssh_host_{kind}_key\n"
                        for kind in spec.host_key_types if kind != "ed25519")
        self._file("etc/ssh/sshd_config", SSHD_CONFIG.format(
            hostname=self.a.hostname, address=self.a.address, options=options,
            extra_host_keys=extra))
        self._file(f"etc/sudoers.d/{spec.admin}", f"{spec.admin} ALL=(ALL:ALL) NOPASSWD: ALL\n",
                   mode=0o440)
        for path, text in spec.skel.items():
            self._file(f"etc/skel/{path}", text)
        for path in spec.htpasswd_files:
            self._file(path.lstrip("/"), "", mode=0o600)
        (self.upper / "var/log").mkdir(parents=True, exist_ok=True)
        if not (spec.docker and "v1" in spec.compose):
            self._whiteout("usr/bin/docker-compose")
        if spec.docker:
            # The test engine has no bridge network, which BuildKit's RUN steps need: the
            # classic builder, for ssh sessions (pam_env) and login shells (su -) alike.
            self._file("etc/environment", "DOCKER_BUILDKIT=0\n")
            self._file("etc/profile.d/docker-buildkit.sh", "export DOCKER_BUILDKIT=0\n")
        self._homes(gid_base)

    def _whiteout(self, relative: str) -> None:
        """Hide a file of the lower root (overlayfs: a 0/0 character device in upper)."""
        target = self.upper / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def _append_etc(self, name: str, lines: list[str]) -> None:
        source = self.lower / "etc" / name
        target = self.upper / "etc" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text() + "".join(f"{line}\n" for line in lines))
        info = source.stat()
        os.chown(target, info.st_uid, info.st_gid)
        target.chmod(info.st_mode & 0o7777)

    def _file(self, relative: str, text: str, mode: int = 0o644) -> None:
        target = self.upper / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def _homes(self, gid_base: int) -> None:
        spec = self.spec
        admin_home = self.upper / "home" / spec.admin
        self._home(admin_home, ADMIN_UID, ADMIN_UID, 0o750)
        ssh = admin_home / ".ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_text(spec.admin_pubkey.strip() + "\n")
        (ssh / "authorized_keys").chmod(0o600)
        for path in (ssh, ssh / "authorized_keys"):
            os.chown(path, ADMIN_UID, ADMIN_UID)
        students_dir = self.upper / spec.students_dir.lstrip("/")
        students_dir.mkdir(parents=True, exist_ok=True)
        os.chown(students_dir, ADMIN_UID, ADMIN_UID)
        students_dir.chmod(0o711)
        for n in self.a.students:
            self._home(students_dir / f"student{n}", spec.uid_base + n, gid_base + n, 0o750)

    def _home(self, home: Path, uid: int, gid: int, mode: int) -> None:
        """A home made as `useradd -m` makes it: /etc/skel's files, owned by the user."""
        skel = self.upper / "etc/skel"
        shutil.copytree(self.lower / "etc/skel", home, symlinks=True)
        if skel.exists():
            shutil.copytree(skel, home, symlinks=True, dirs_exist_ok=True)
        for path in [home, *home.rglob("*")]:
            os.lchown(path, uid, gid)
        home.chmod(mode)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def appliance_root() -> ApplianceRoot:
    why = missing()
    if why is not None:
        pytest.skip(why)
    root = prepare_root()
    built = f"built in {root.built_seconds:.1f} s, " if root.built_seconds else ""
    print(f"appliance root: {built}unpacked in {root.unpack_seconds:.1f} s")
    return root


@pytest.fixture(scope="session")
def appliance_cgroups(appliance_root: ApplianceRoot) -> Iterator[reaper.ReapedCgroup]:
    reaper.leftovers(CGROUP_PREFIX)
    cgroups = reaper.ReapedCgroup(f"{CGROUP_PREFIX}{os.getpid()}")
    try:
        yield cgroups
    finally:
        cgroups.close()


@pytest.fixture
def admin_keypair(tmp_path: Path) -> KeyPair:
    """The backend side's admin key pair (ed25519, no passphrase)."""
    return make_keypair(tmp_path / "admin-key")


ApplianceFactory = Callable[..., Appliance]


@pytest.fixture
def appliance_factory(request: pytest.FixtureRequest, appliance_root: ApplianceRoot,
                      appliance_cgroups: reaper.ReapedCgroup, admin_keypair: KeyPair,
                      tmp_path: Path) -> Iterator[ApplianceFactory]:
    """`appliance_factory(**Spec fields)` starts an appliance and returns it; the admin key
    defaults to `admin_keypair`'s. All are stopped at the test's end (and with `docker=True`,
    the engine's containers, networks, volumes and new images are removed)."""
    made: list[Appliance] = []
    engines: list[Any] = []

    def make(**options: Any) -> Appliance:
        options.setdefault("admin_pubkey", admin_keypair.public)
        spec = Spec(**options)
        mounts: list[tuple[str, str]] = []
        if spec.docker:
            # support.docker_engine's session fixture: asked for only when needed.
            engine = request.getfixturevalue("docker_engine")
            engines[:] = [engine]
            mounts = engine.appliance_mounts(spec.compose)
        appliance = Appliance(spec, appliance_root, tmp_path / f"appliance-{len(made)}",
                              appliance_cgroups, mounts)
        made.append(appliance)
        appliance.start()
        return appliance

    try:
        yield make
    finally:
        for appliance in made:
            appliance.close()
        for engine in engines:
            engine.reset()
