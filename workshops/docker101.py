"""Handler for WKSHP-Docker101: the student's ports and ssh access to the Docker appliance.

Mirrors the local part of the public WoD backend's create script
(wod-backend `scripts/create-WKSHP-Docker101.sh.j2`), which for student N:

- took APPMIN, the first student of the workshop's range (`range[0]` of its API-DB record),
  and computed `sshport = SSHPORT-WKSHP-Docker101 + N - APPMIN` and
  `httpport = HTTPPORT-WKSHP-Docker101 + N - APPMIN` (both base ports are group_vars);
- wrote `Host $WODRTARGET` / `Port $sshport` as the student's `~/.ssh/config`;
- stored httpport as the per-student variable HTTPPORT (ansible-vaulted into
  `pass/variables_<W>_<N>.yml`) for the notebooks to use;
- then built and started the student's `dockerlab<N>` container on the appliance over
  ssh (docker compose publishing httpport and sshport -> 22).

This module does the first three: HTTPPORT goes to `ctx.student_vars`, and the ssh entry
(also naming the user, the key the CREATE made and `StrictHostKeyChecking accept-new`)
goes into a block of `~/.ssh/config` between marker comments, replaced on each run while
other entries stay. The block goes first, as ssh takes the first value it finds for each
option, and ends with `Host *` so options that followed at the top of the file still
apply to every host. Building the container needs the appliance and its image: an
installation keeps its `create-WKSHP-Docker101.sh` for that, which runs after this module.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from wodmail.errors import AccountError, ConfigurationError
from wodmail.hooks import HookContext

WORKSHOPS = ("WKSHP-Docker101",)
PROVIDES = ("HTTPPORT",)

HTTP_PORT_KEY = "HTTPPORT-WKSHP-Docker101"
SSH_PORT_KEY = "SSHPORT-WKSHP-Docker101"
BEGIN = "# BEGIN wodmail WKSHP-Docker101"
END = "# END wodmail WKSHP-Docker101"
_OLD_BLOCK = re.compile(rf"^{re.escape(BEGIN)}\n.*?^{re.escape(END)}\n\n?", re.M | re.S)


async def create(ctx: HookContext) -> None:
    student, home = _student(ctx)
    if not ctx.target:
        raise ConfigurationError(
            f"{ctx.workshop} needs an appliance, but its workshop record has neither "
            f"monoappliance nor multiappliance set"
        )
    offset = _offset(ctx, student)
    http_port = _port(ctx, HTTP_PORT_KEY, offset, student)
    ssh_port = _port(ctx, SSH_PORT_KEY, offset, student)
    ctx.student_vars["HTTPPORT"] = http_port
    write_ssh_entry(home, _ssh_block(ctx.target, f"student{student}", ssh_port))
    ctx.log.info("docker101 ports", http_port=http_port, ssh_port=ssh_port, target=ctx.target)


def _student(ctx: HookContext) -> tuple[int, Path]:
    if ctx.student is None or ctx.home is None:
        raise AccountError(f"{ctx.workshop} create needs one student and its home")
    return ctx.student, ctx.home


def _offset(ctx: HookContext, student: int) -> int:
    first = ctx.range_min
    if first is None:
        raise ConfigurationError(
            f"{ctx.workshop} has no student range in its workshop record: its ports are "
            f"allocated from the range's first student"
        )
    if student < first:
        raise ConfigurationError(
            f"student{student} is below the range of {ctx.workshop} (first student {first})"
        )
    return student - first


def _port(ctx: HookContext, key: str, offset: int, student: int) -> int:
    value = ctx.variable(key)
    try:
        base = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{key} = {value!r} is not a port number") from None
    port = base + offset
    if not 0 < port <= 65535:
        raise ConfigurationError(
            f"{key} = {base}: student{student} would get port {port}, outside 1-65535"
        )
    return port


def _ssh_block(host: str, user: str, port: int) -> str:
    return (
        f"{BEGIN}\n"
        "# Written by wodmail at each CREATE of WKSHP-Docker101: edits here are lost.\n"
        f"Host {host}\n"
        f"    User {user}\n"
        f"    Port {port}\n"
        "    IdentityFile ~/.ssh/id_rsa\n"
        "    StrictHostKeyChecking accept-new\n"
        "Host *\n"
        f"{END}\n"
    )


def write_ssh_entry(home: Path, block: str) -> Path:
    """Put `block` first in HOME/.ssh/config, replacing this module's previous block.

    The file and `.ssh` belong to the owner of HOME (ssh refuses a config others can
    write). Symlinks are refused: HOME belongs to the student.
    """
    ssh_dir = home / ".ssh"
    if ssh_dir.is_symlink():
        raise AccountError(f"{ssh_dir} is a symlink: refusing to write through it")
    owner = home.stat()
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    os.chown(ssh_dir, owner.st_uid, owner.st_gid)
    config = ssh_dir / "config"
    others = _OLD_BLOCK.sub("", _read_regular(config))
    text = block + ("\n" + others if others.strip() else "")
    staged = ssh_dir / ".config.wodmail"
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chown(staged, owner.st_uid, owner.st_gid)
    os.replace(staged, config)
    return config


def _read_regular(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise AccountError(f"{path} cannot be read safely (a symlink?): {exc}") from exc
    with os.fdopen(fd, encoding="utf-8", errors="replace") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AccountError(f"{path} is not a regular file: refusing to rewrite it")
        return stream.read()
