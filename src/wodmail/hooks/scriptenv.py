"""Who legacy hook scripts run as, and the environment they find, as under procmail.

procmail ran `procmail-action.sh` as the WoD user (WODUSER), which sourced `/etc/wod.sh` and
the private `wod-private.sh`, then exported the order's variables before calling the
`create-<WS>.sh` ... scripts. Stock scripts rely on all of it: `functions.sh` helpers call
the API-DB with `$accessToken` at `$WODAPIDBEXTURL`, write vaulted files under
`$WODANSIBLEPRIVDIR` as WODUSER, use `$HOME`, `$USER`, `sudo`.

`ScriptUser`: when the daemon is root, scripts run as `scripts.run_as` (default
`accounts.admin_user`, i.e. WODUSER) with its uid, groups, HOME, SHELL and a login shell's
environment (`bash --login` reads /etc/profile and its ~/.profile). When the daemon is not
root it cannot switch: scripts run as the daemon's own user, and `HookRun.user` says so.

`ScriptShell`: with an installation (or a switched user), a script is started through
`bash -c WRAPPER`, which sources wod.sh and wod-private.sh, then exports the order's
variables (passed in the environment as `WODMAIL_SET_<NAME>`, so neither sourced file nor
profile can override them, and never on a command line where `ps` would show secrets), sets
`USER=$LOGNAME` as procmail-action.sh did, and execs the script.

When wodmail is root, wod.sh and wod-private.sh are opened by the daemon and checked before
each run: a regular file (wod-private.sh, in the WoD user's tree, not through a symbolic
link) owned by root or by the user that sources it, not writable by group or others
(`wodmail.safefiles`). The wrapper sources exactly those files, through the descriptors it
inherits (`/dev/fd/N`), so a file swapped after the check is never the one sourced.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import stat
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from wodmail.errors import AccountError, ConfigurationError
from wodmail.safefiles import as_root, check_owner, open_file, whom
from wodmail.userdb import UserDb

log = structlog.get_logger(__name__)

SET_PREFIX = "WODMAIL_SET_"
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"
# $1 and $2: the descriptors (numbers) of wod.sh and wod-private.sh, or "" for none.
WRAPPER = r"""
wodmail_fds="$1 $2"; shift 2
for wodmail_fd in $wodmail_fds; do
  if [ -r "/dev/fd/$wodmail_fd" ]; then . "/dev/fd/$wodmail_fd" </dev/null; fi
done
for wodmail_fd in $wodmail_fds; do exec {wodmail_fd}<&-; done
for wodmail_name in $(compgen -e); do
  case $wodmail_name in
    WODMAIL_SET_*) export "${wodmail_name#WODMAIL_SET_}=${!wodmail_name}"; unset "$wodmail_name";;
  esac
done
unset wodmail_name wodmail_fd wodmail_fds
export USER=$LOGNAME
exec "$@"
"""


@dataclass(frozen=True)
class ScriptUser:
    """The account scripts are started as (the daemon switches to it: it is root)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path
    shell: str


@dataclass(frozen=True)
class ScriptShell:
    """How legacy scripts are started: as whom, and with which installation files sourced."""

    user: ScriptUser | None = None
    """None: as the daemon's own user."""
    wod_sh: Path | None = None
    private_sh: Path | None = None
    not_switched: str = ""
    """Why `user` is None although a user was asked for (the daemon is not root)."""

    @property
    def wrapped(self) -> bool:
        return self.user is not None or self.wod_sh is not None

    @property
    def label(self) -> str:
        """Who a script runs as, for its HookRun record."""
        if self.user is not None:
            return self.user.name
        own = pwd.getpwuid(os.geteuid()).pw_name
        return f"{own} ({self.not_switched})" if self.not_switched else own

    @property
    def sourcing_uid(self) -> int:
        """Who sources wod.sh and wod-private.sh: the script's user."""
        return self.user.uid if self.user is not None else os.geteuid()

    @contextmanager
    def launch(self, script: Path) -> Iterator[tuple[list[str], tuple[int, ...]]]:
        """The argv that starts `script`, and the descriptors it must inherit (wod.sh and
        wod-private.sh, checked: UnsafeFile), open until the block ends."""
        if not self.wrapped:
            yield [str(script)], ()
            return
        with ExitStack() as stack:
            fds = [self._open_sourced(path, follow, stack)
                   for path, follow in ((self.wod_sh, True), (self.private_sh, False))]
            bash = shutil.which("bash") or "/bin/bash"
            login = ["--login"] if self.user is not None else ["--noprofile", "--norc"]
            numbers = ["" if fd is None else str(fd) for fd in fds]
            yield ([bash, *login, "-c", WRAPPER, "wodmail-hook", *numbers, str(script)],
                   tuple(fd for fd in fds if fd is not None))

    def check_sourced(self) -> None:
        """UnsafeFile when wod.sh or wod-private.sh may not be sourced (see the module)."""
        with ExitStack() as stack:
            self._open_sourced(self.wod_sh, True, stack)
            self._open_sourced(self.private_sh, False, stack)

    def _open_sourced(self, path: Path | None, follow: bool, stack: ExitStack) -> int | None:
        """A descriptor on `path`, checked when root; None when there is none to source (no
        such file, or, not root, one we cannot read: the wrapper skipped those too)."""
        if path is None:
            return None
        root = as_root()
        try:
            # wod.sh's path is root's choice (/etc); wod-private.sh's is in the WoD user's tree.
            fd = open_file(path, follow=follow or not root)
        except OSError as exc:
            if exc.errno == errno.ENOENT or not root:
                return None
            raise ConfigurationError(f"{path}: cannot be read: {exc.strerror}") from None
        stack.callback(os.close, fd)
        if root:
            uid = self.sourcing_uid
            check_owner(path, os.fstat(fd), owners={0, uid},
                        use=f"sourced as {whom(uid)} before each hook script")
        return fd

    def env(self, base: Mapping[str, str], exports: Mapping[str, str]) -> dict[str, str]:
        """The environment: `base` (the daemon's safe subset) or the switched user's login
        basics, then `exports` (set after the installation files are sourced when wrapped)."""
        if self.user is None:
            env = dict(base)
        else:
            user = self.user
            env = {"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name,
                   "SHELL": user.shell, "PATH": LOGIN_PATH}
            if "LANG" in base:
                env["LANG"] = base["LANG"]
        if not self.wrapped:
            return {**env, **exports}
        return {**env, **{SET_PREFIX + key: value for key, value in exports.items()}}

    def check_reachable(self, script: Path) -> None:
        """ConfigurationError when the user cannot reach and run `script` (its folder is
        also its working directory). Mode bits only: ACLs may grant more, never less here."""
        user = self.user
        if user is None:
            return
        for folder in reversed(script.parents):
            if not _allows(folder, user, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
                raise ConfigurationError(
                    f"hook script {script}: {user.name} (uid {user.uid}) cannot enter {folder}"
                )
        if not _allows(script, user, stat.S_IRUSR | stat.S_IXUSR, stat.S_IRGRP | stat.S_IXGRP,
                       stat.S_IROTH | stat.S_IXOTH):
            raise ConfigurationError(
                f"hook script {script}: {user.name} (uid {user.uid}) cannot read and run it"
            )


def _allows(path: Path, user: ScriptUser, owner: int, group: int, other: int) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    if user.uid == 0:
        return True
    if info.st_uid == user.uid:
        return info.st_mode & owner == owner
    if info.st_gid in user.groups:
        return info.st_mode & group == group
    return info.st_mode & other == other


def script_shell(
    run_as: str | None,
    accounts_root: Path,
    wod_sh: Path | None = None,
    private_sh: Path | None = None,
) -> ScriptShell:
    """The ScriptShell for user `run_as` (None or "": the daemon's own user)."""
    if not run_as:
        return ScriptShell(None, wod_sh, private_sh)
    if os.geteuid() != 0:
        reason = f"wodmail is not root, so not {run_as}"
        log.warning("legacy hook scripts run as wodmail's own user", wanted=run_as,
                    reason="wodmail is not root")
        return ScriptShell(None, wod_sh, private_sh, not_switched=reason)
    users = UserDb(accounts_root)
    try:
        entry = users.user(run_as)
        groups = users.groups_of(run_as)
    except AccountError as exc:
        raise ConfigurationError(f"scripts.run_as / accounts.admin_user: {exc}") from None
    user = ScriptUser(run_as, entry.uid, entry.gid, tuple(sorted({entry.gid, *groups})),
                      entry.home, entry.shell)
    return ScriptShell(user, wod_sh, private_sh)
