"""The student's account on an appliance: what the stock `create-appliance.sh` and
`reset-appliance.sh` did, over the kept connection and without a password in any argv.

Work inside the student's home runs as the student (`sudo -u studentN`), never as root: the
previous participant may still have a session there and may have planted links, and as the
student a link leads nowhere the student could not write anyway. Only what needs root runs
through sudo: `chpasswd` and `htpasswd` (the password on stdin), and ending the student's
processes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from wodmail.appliances import Appliance
from wodmail.errors import AccountError, ConfigurationError
from wodmail.hooks.context import HookContext

MAX_PUBLIC_KEY_BYTES = 64 * 1024

# Runs as the student, $1 = home: empty it, restore the appliance's skeleton, then install
# the key read on stdin as the only authorized key (0700 .ssh, 0600 authorized_keys). One
# line: `sudo -i` turns a newline into a line continuation.
_FRESH_HOME = (
    'cd "$1" && find . -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + && '
    '{ if command -v rsync >/dev/null; then rsync -a /etc/skel/ ./; '
    'else cp -a /etc/skel/. ./; fi; } && '
    'rm -rf .ssh && mkdir -m 0700 .ssh && umask 077 && '
    'cat > .ssh/authorized_keys.new && mv -f .ssh/authorized_keys.new .ssh/authorized_keys'
)


@dataclass(frozen=True)
class ApplianceUser:
    """A student's passwd entry on an appliance."""

    name: str
    home: str
    gid: int


async def student_user(ctx: HookContext, app: Appliance | None = None) -> ApplianceUser:
    """The student's entry on the appliance (`getent passwd studentN`); ConfigurationError
    naming the appliance when the student does not exist there (the appliance was set up for
    another range: `setup_appliance.yml` makes them)."""
    app = app or ctx.appliance()
    name = _name(ctx)
    found = await app.run("getent", "passwd", name, check=False)
    fields = found.stdout.strip().split(":")
    if found.status != 0 or len(fields) < 7 or not fields[5].startswith("/"):
        raise ConfigurationError(
            f"{name} does not exist on the appliance {app.address} for workshop {ctx.workshop}"
        )
    return ApplianceUser(name=name, home=fields[5], gid=int(fields[3]))


async def setup_student_account(ctx: HookContext, app: Appliance | None = None) -> ApplianceUser:
    """`create-appliance.sh`: the student's new password (unless the installation uses LDAP,
    WODLDAPSETUP), their earlier processes ended, their home emptied and refilled from the
    appliance's /etc/skel, and their backend key (HOME/.ssh/id_rsa.pub) as their only
    authorized key there."""
    app = app or ctx.appliance()
    user = await student_user(ctx, app)
    key = read_public_key(ctx)
    await set_linux_password(ctx, app)
    await end_student_processes(ctx, app)
    await app.run("sh", "-c", _FRESH_HOME, "fresh-home", user.home, user=user.name,
                  input=key)
    return user


async def reset_student_account(ctx: HookContext, app: Appliance | None = None) -> ApplianceUser:
    """`reset-appliance.sh`: the student's `.ssh` removed and a new password set (unless
    LDAP), so the previous participant can no longer log in; their processes are ended."""
    app = app or ctx.appliance()
    user = await student_user(ctx, app)
    await set_linux_password(ctx, app)
    await end_student_processes(ctx, app)
    await app.run("rm", "-rf", "--", f"{user.home}/.ssh", user=user.name)
    return user


async def set_linux_password(ctx: HookContext, app: Appliance | None = None) -> None:
    """The order's password for the student on the appliance (`chpasswd`, stdin), unless
    the installation uses LDAP (WODLDAPSETUP), where the directory holds it."""
    if "WODLDAPSETUP" in ctx.variables:
        return
    app = app or ctx.appliance()
    await app.run("chpasswd", sudo=True, input=f"{_name(ctx)}:{_password(ctx)}\n")


async def set_htpasswd(ctx: HookContext, path: str, app: Appliance | None = None) -> None:
    """The student's entry in the appliance's htpasswd file `path`, with the order's
    password (`htpasswd -i`: the password on stdin, never in argv)."""
    app = app or ctx.appliance()
    await app.run("htpasswd", "-i", path, _name(ctx), sudo=True, input=_password(ctx))


async def end_student_processes(ctx: HookContext, app: Appliance | None = None) -> None:
    """SIGKILL every process of the student on the appliance (the previous participant's
    shells); none running is fine."""
    app = app or ctx.appliance()
    done = await app.run("pkill", "-KILL", "-u", _name(ctx), sudo=True, check=False)
    if done.status not in (0, 1):
        raise AccountError(f"pkill for {_name(ctx)} on {app.address} failed: {done.stderr}")


def read_public_key(ctx: HookContext) -> str:
    """The student's backend public key, HOME/.ssh/id_rsa.pub, read without following a
    link the student may have planted."""
    if ctx.home is None:
        raise AccountError(f"{ctx.workshop}: the appliance account needs the student's home")
    path = ctx.home / ".ssh" / "id_rsa.pub"
    text = _read_small(path)
    if not text.startswith(("ssh-", "ecdsa-", "sk-")):
        raise AccountError(f"{path} is not an OpenSSH public key")
    return text if text.endswith("\n") else text + "\n"


def _read_small(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise AccountError(f"{path} cannot be read (missing, or a link): {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AccountError(f"{path} is not a regular file")
        data = stream.read(MAX_PUBLIC_KEY_BYTES + 1)
    if len(data) > MAX_PUBLIC_KEY_BYTES:
        raise AccountError(f"{path} is larger than {MAX_PUBLIC_KEY_BYTES} bytes")
    return data.decode("ascii", "replace").strip()


def _name(ctx: HookContext) -> str:
    if ctx.student is None:
        raise AccountError(f"{ctx.workshop}: an appliance account is per student")
    return f"student{ctx.student}"


def _password(ctx: HookContext) -> str:
    if not ctx.password:
        raise AccountError(f"{ctx.workshop}: this order has no password for {_name(ctx)}")
    return ctx.password
