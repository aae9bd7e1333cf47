"""The Linux side of a student account: password, home, ssh key pair, ownership, processes.

`root` is the file-system root that holds etc/passwd, etc/shadow and etc/group: `/` in
production, a sandbox directory in tests. The plain functions only touch files (callers
run them with `asyncio.to_thread`); the coroutines wait on subprocesses or dying processes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from wodmail.errors import AccountError
from wodmail.host import acl
from wodmail.userdb import SYSTEM_ROOT

log = structlog.get_logger(__name__)

SSH_DIR = ".ssh"
CHPASSWD_TIMEOUT = 30.0
SETFACL_TIMEOUT = 300.0
KILL_WAIT = 2.0  # how long SIGKILLed processes get to disappear before we give up on them
POLL_INTERVAL = 0.05
# System tools may live in sbin dirs that a service's PATH lacks.
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_acl_warnings_given: set[str] = set()


def find_tool(name: str) -> str | None:
    """The path of a system tool, looking in the sbin folders a service's PATH may lack."""
    return shutil.which(name) or shutil.which(name, path=TOOL_PATH)


# ---------------------------------------------------------------- password


async def set_linux_password(user: str, password: str, root: Path) -> None:
    """Set `user`'s password in `<root>/etc/shadow` (SHA-512) with the real `chpasswd`.

    The password goes to chpasswd on stdin, never on its command line.
    """
    _check_chpasswd_input(user, password)
    argv = _chpasswd_command(user, root)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )
    try:
        _, err = await asyncio.wait_for(
            proc.communicate(f"{user}:{password}\n".encode()), CHPASSWD_TIMEOUT
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AccountError(
            f"chpasswd did not set the password of {user} within {CHPASSWD_TIMEOUT:g} s"
        ) from None
    if proc.returncode != 0:
        said = err.decode(errors="replace").replace(password, "***").strip()
        raise AccountError(
            f"chpasswd could not set the password of {user} under {root}"
            f" (exit {proc.returncode}): {said or 'no message'}"
        )
    log.info("linux password set", user=user, root=str(root))


def _chpasswd_command(user: str, root: Path) -> list[str]:
    root = Path(root).resolve()
    if not root.is_dir():
        raise AccountError(f"cannot set the password of {user}: root {root} is not a directory")
    chpasswd = find_tool("chpasswd")
    if chpasswd is None:
        raise AccountError("chpasswd not found: install the passwd (shadow-utils) package")
    # -c SHA512 makes chpasswd hash by itself; without it chpasswd needs PAM, which a
    # sandbox root does not have.
    argv = [chpasswd, "-c", "SHA512"]
    if root != SYSTEM_ROOT:
        argv += ["-R", str(root)]
    return argv


def _check_chpasswd_input(user: str, password: str) -> None:
    # chpasswd reads one "user:password" line: a colon in the name or a line break anywhere
    # would change which account gets which password.
    if not user or any(c in user for c in ":\n\r\0"):
        raise AccountError(f"invalid user name {user!r} for chpasswd")
    if not password:
        raise AccountError(f"refusing to set an empty password for {user}")
    if any(c in password for c in "\n\r\0"):
        raise AccountError(f"the new password of {user} contains a line break or NUL")


# ---------------------------------------------------------------- home


def wipe_home(home: Path) -> None:
    """Remove everything inside `home`, dotfiles included, keeping `home` itself.

    Symlinks inside are removed, never followed: what they point at survives.
    """
    home = _checked_home(home)
    for entry in os.scandir(home):
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as exc:
            raise AccountError(
                f"cannot wipe {home}: {exc.filename or entry.path}: {exc.strerror}"
            ) from exc
    log.info("home wiped", home=str(home))


def restore_skel(home: Path, skel_dirs: Iterable[Path]) -> None:
    """Copy the contents of each skeleton dir into `home`, in order: later ones win.

    Skeleton dirs that do not exist are skipped. Files keep their modes; symlinks are
    copied as symlinks.
    """
    home = _checked_home(home)
    skel_dirs = [Path(s) for s in skel_dirs]
    for skel in skel_dirs:
        if not skel.is_dir():
            if skel.exists() or skel.is_symlink():
                log.warning("skeleton is not a directory, skipped", skel=str(skel))
            continue
        try:
            _copy_into(skel, home)
        except OSError as exc:
            raise AccountError(
                f"cannot copy skeleton {skel} into {home}: {exc.filename}: {exc.strerror}"
            ) from exc
    log.info("skeleton restored", home=str(home), skel=[str(s) for s in skel_dirs])


def _checked_home(home: Path) -> Path:
    home = Path(home)
    if home.is_symlink():
        raise AccountError(f"refusing to work on home {home}: it is a symlink")
    if not home.is_dir():
        raise AccountError(f"home {home} is not a directory")
    if home.resolve() == SYSTEM_ROOT:
        raise AccountError(f"refusing to work on home {home}: it is the root directory")
    return home


def secure_home(home: Path, uid: int, gid: int) -> list[str]:
    """Check `home` before any change to the account, and repair what is safe to repair.

    A symlink, a non-directory or / is an AccountError. The home itself (not what is in it)
    is given back to uid:gid when someone else owns it, and closed to other users (no r, w
    or x for "other": students must not read each other's work). Its group bits are kept
    as they carry: with an extended ACL (the installer's rwx entry for WODUSER) they are the
    ACL's mask, which is kept, or made, rwx so that the named entries work; without one
    they are the student's own group, which loses write (as sshd's StrictModes wants). Each
    repair is returned as a short text. AccountError when it cannot be repaired.
    """
    home = _checked_home(home)
    repaired = []
    info = os.lstat(home)
    try:
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.chown(home, uid, gid, follow_symlinks=False)
            repaired.append(f"owner {info.st_uid}:{info.st_gid} -> {uid}:{gid}")
        repaired.extend(_close_home(home, info.st_mode & 0o7777))
    except OSError as exc:
        raise AccountError(
            f"home {home} is owned by {info.st_uid}:{info.st_gid} with mode "
            f"{info.st_mode & 0o7777:04o} and cannot be given back to {uid}:{gid} "
            f"closed to other users: {exc.strerror}"
        ) from exc
    if repaired:
        log.warning("home repaired", home=str(home), repaired=repaired)
    return repaired


def _close_home(home: Path, mode: int) -> list[str]:
    """No access for other users; the ACL mask rwx, or no group write without an ACL."""
    access = acl.read_access_acl(home)
    if access is None:
        if mode & 0o027:
            _chmod_no_follow(str(home), mode & ~0o027)
            return [f"mode {mode:04o} -> {mode & ~0o027:04o}"]
        return []
    mask = access.mask or 0
    if mode & 0o007 == 0 and mask == 0o7:
        return []
    acl.set_access_acl(home, access.with_perms(acl.OTHER, 0).with_perms(acl.MASK, 0o7))
    new_mode = os.lstat(home).st_mode & 0o7777
    repair = f"mode {mode:04o} -> {new_mode:04o}"
    if mask != 0o7:
        repair += f" (ACL mask {acl.perms_text(mask)} -> rwx: its named entries work again)"
    return [repair]


def _copy_into(src_dir: Path, dst_dir: Path) -> None:
    for entry in os.scandir(src_dir):
        target = dst_dir / entry.name
        if entry.is_dir(follow_symlinks=False):
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            target.mkdir(exist_ok=True)
            shutil.copystat(entry.path, target)
            _copy_into(Path(entry.path), target)
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.is_symlink() or target.exists():
            target.unlink()
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        else:
            shutil.copy2(entry.path, target)


# ---------------------------------------------------------------- ssh keys


def create_ssh_keypair(
    home: Path, comment: str, *, key_size: int = 3072, key: rsa.RSAPrivateKey | None = None
) -> str:
    """Write a fresh RSA pair to HOME/.ssh/id_rsa{,.pub}, no passphrase; return the public line.

    `key` is a pair made ahead of time (see wodmail.host.keypool), else one is generated here.
    An existing pair is replaced. .ssh is made 0700 and id_rsa 0600; ownership is left to
    `give_to`.
    """
    if any(c in comment for c in "\n\r\0"):
        raise AccountError(f"ssh key comment {comment!r} contains a line break or NUL")
    ssh_dir = _checked_home(home) / SSH_DIR
    if ssh_dir.is_symlink() or (ssh_dir.exists() and not ssh_dir.is_dir()):
        raise AccountError(f"refusing to write keys into {ssh_dir}: not a plain directory")
    if key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_key = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    public_line = f"{public_key.decode()} {comment}".rstrip()
    try:
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(ssh_dir, 0o700)
        _write_replacing(ssh_dir / "id_rsa", private, 0o600)
        _write_replacing(ssh_dir / "id_rsa.pub", f"{public_line}\n".encode(), 0o644)
    except OSError as exc:
        raise AccountError(f"cannot write ssh keys in {ssh_dir}: {exc.strerror}") from exc
    log.info("ssh key pair created", dir=str(ssh_dir), comment=comment)
    return public_line


def _write_replacing(path: Path, data: bytes, mode: int) -> None:
    """Write `data` beside `path` with `mode` from the start, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.wodmail-tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


# ---------------------------------------------------------------- ownership


def give_to(paths: Iterable[Path], uid: int, gid: int, admin_uid: int | None = None) -> None:
    """Make `paths` (recursively, symlinks not followed) belong to uid:gid, closed to other
    users (their "other" bits cleared; group bits, the student's own group, are kept).

    With `admin_uid`, also grant that user rwx through ACLs (access ACLs everywhere,
    default ACLs on directories) with one `setfacl -R`. Where ACLs cannot be set (no
    setfacl, a file system without ACL support) a warning is logged once and the
    ownership change stands.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        _chown_tree(path, uid, gid)
    if admin_uid is not None and paths:
        _grant_admin(paths, admin_uid)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    try:
        _chown_closed(str(top), uid, gid)
        if top.is_symlink() or not top.is_dir():
            return
        for dir_path, dir_names, file_names in os.walk(top, onerror=_raise):
            for name in dir_names + file_names:
                _chown_closed(os.path.join(dir_path, name), uid, gid)
    except OSError as exc:
        raise AccountError(
            f"cannot give {exc.filename or top} to {uid}:{gid}: {exc.strerror}"
        ) from exc


def _chown_closed(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    info = os.lstat(path)
    if info.st_mode & 0o007 and not stat.S_ISLNK(info.st_mode):
        # Before the ACLs are set: setfacl copies "other" into a folder's default ACL.
        _chmod_no_follow(path, stat.S_IMODE(info.st_mode) & ~0o007)


def _chmod_no_follow(path: str, mode: int) -> None:
    try:
        os.chmod(path, mode, follow_symlinks=False)
    except NotImplementedError:
        pass  # a symlink (put there since we looked): it has no mode of its own


def _raise(exc: OSError) -> None:
    raise exc


def _grant_admin(paths: list[Path], admin_uid: int) -> None:
    setfacl = find_tool("setfacl")
    if setfacl is None:
        _warn_once("setfacl not found (install the acl package): admin ACLs not set")
        return
    entries = f"u:{admin_uid}:rwx,d:u:{admin_uid}:rwx"  # setfacl -R puts d: on dirs only
    # -P: walk physically, never through symlinks.
    argv = [setfacl, "-R", "-P", "-m", entries, "--", *map(str, paths)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=SETFACL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AccountError(f"setfacl did not finish within {SETFACL_TIMEOUT:g} s") from exc
    if done.returncode == 0:
        return
    if "Operation not supported" in done.stderr:
        _warn_once("the file system does not support ACLs: admin ACLs not set")
        return
    raise AccountError(
        f"setfacl could not grant uid {admin_uid} rwx on {', '.join(map(str, paths))}:"
        f" {done.stderr.strip()}"
    )


def _warn_once(message: str) -> None:
    if message not in _acl_warnings_given:
        _acl_warnings_given.add(message)
        log.warning(message)


# ---------------------------------------------------------------- all of CREATE step 3


async def reset_home(
    home: Path,
    skel_dirs: Iterable[Path],
    *,
    uid: int,
    gid: int,
    admin_uid: int | None = None,
    key_comment: str,
    take_key: Callable[[], rsa.RSAPrivateKey] | None = None,
) -> None:
    """Wipe `home`, restore the skeletons, create the ssh pair, give it all to uid:gid.

    `take_key` hands out the pair (a key pool's `take`), in the same worker thread as the
    rest; without it one is generated. The admin ACL goes on everything but .ssh: an ACL
    mask shows as group bits, and ssh refuses a private key that looks group-readable.
    """
    await asyncio.to_thread(
        _reset_home, Path(home), list(skel_dirs), uid, gid, admin_uid, key_comment, take_key
    )


def _reset_home(
    home: Path,
    skel_dirs: list[Path],
    uid: int,
    gid: int,
    admin_uid: int | None,
    key_comment: str,
    take_key: Callable[[], rsa.RSAPrivateKey] | None = None,
) -> None:
    wipe_home(home)
    restore_skel(home, skel_dirs)
    create_ssh_keypair(home, key_comment, key=take_key() if take_key else None)
    ssh_dir = home / SSH_DIR
    give_to([p for p in home.iterdir() if p != ssh_dir], uid, gid, admin_uid)
    give_to([ssh_dir], uid, gid)


# ---------------------------------------------------------------- processes


@dataclass(frozen=True)
class _Process:
    pid: int
    start: str  # start time since boot: tells a process from a later one with the same pid


async def end_processes(uid: int, grace: float = 5.0) -> int:
    """End every process of `uid`: SIGTERM, up to `grace` seconds, then SIGKILL.

    Returns how many processes were signalled. Refuses uid 0 and wodmail's own uid.
    """
    if uid == 0 or uid == os.getuid():
        raise AccountError(f"refusing to end the processes of uid {uid}")
    termed = await asyncio.to_thread(_processes_of, uid)
    _send(termed, signal.SIGTERM)
    await _wait_gone(termed, grace)
    # Rescan rather than reuse the list: processes may have forked while dying.
    killed = await asyncio.to_thread(_processes_of, uid)
    _send(killed, signal.SIGKILL)
    stuck = await _wait_gone(killed, KILL_WAIT)
    if stuck:
        log.warning("processes survived SIGKILL", uid=uid, pids=sorted(p.pid for p in stuck))
    count = len(termed | killed)
    log.info("processes ended", uid=uid, count=count, killed=len(killed))
    return count


def _processes_of(uid: int) -> set[_Process]:
    found: set[_Process] = set()
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        start = _live_start(pid)
        if start is not None and uid in _real_and_effective_uids(pid):
            found.add(_Process(pid, start))
    return found


def _live_start(pid: int) -> str | None:
    """The start time of `pid`, or None when it is gone or a zombie (nothing left to kill)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def _real_and_effective_uids(pid: int) -> tuple[int, ...]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ()
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return tuple(int(n) for n in line.split()[1:3])
    return ()


def _send(processes: set[_Process], signum: signal.Signals) -> None:
    for process in processes:
        if _live_start(process.pid) != process.start:
            continue
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


async def _wait_gone(processes: set[_Process], within: float) -> set[_Process]:
    """Wait up to `within` seconds for `processes` to end; return those still alive."""
    deadline = time.monotonic() + within
    while True:
        alive = {p for p in processes if _live_start(p.pid) == p.start}
        if not alive or time.monotonic() >= deadline:
            return alive
        await asyncio.sleep(POLL_INTERVAL)
