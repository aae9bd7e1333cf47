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
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from wodmail.errors import AccountError, ConfigurationError
from wodmail.userdb import UserDb

log = structlog.get_logger(__name__)

SET_PREFIX = "WODMAIL_SET_"
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"
WRAPPER = r"""
wod_sh=$1; private_sh=$2; shift 2
if [ -n "$wod_sh" ] && [ -r "$wod_sh" ]; then . "$wod_sh" </dev/null; fi
if [ -n "$private_sh" ] && [ -r "$private_sh" ]; then . "$private_sh" </dev/null; fi
for wodmail_name in $(compgen -e); do
  case $wodmail_name in
    WODMAIL_SET_*) export "${wodmail_name#WODMAIL_SET_}=${!wodmail_name}"; unset "$wodmail_name";;
  esac
done
unset wodmail_name wod_sh private_sh
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

    def argv(self, script: Path) -> list[str]:
        if not self.wrapped:
            return [str(script)]
        bash = shutil.which("bash") or "/bin/bash"
        login = ["--login"] if self.user is not None else ["--noprofile", "--norc"]
        return [bash, *login, "-c", WRAPPER, "wodmail-hook", str(self.wod_sh or ""),
                str(self.private_sh or ""), str(script)]

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

    def prepare(self, scratch: Path, files: list[Path]) -> None:
        """Give the scratch folder and the files the script must write to the user."""
        if self.user is None:
            return
        for path in (scratch, *files):
            os.chown(path, self.user.uid, self.user.gid)

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
