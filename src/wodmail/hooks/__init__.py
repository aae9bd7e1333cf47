"""Workshop hooks: the handler API for workshop modules, and the legacy shell scripts.

This package's `__all__` is the whole API a workshop handler module may use, with
`wodmail.errors.__all__`; nothing else of wodmail is promised to stay. A handler module::

    from wodmail.errors import ConfigurationError
    from wodmail.hooks import HookContext

    WORKSHOPS = ("WKSHP-Docker101",)

    async def create(ctx: HookContext) -> None:
        ctx.student_vars["HTTPPORT"] = int(ctx.variable("HTTPPORT-BASE")) + ctx.student
        token = ctx.secret(ctx.variable("APPLIANCE-TOKEN"))  # shown as *** from now on
        await ctx.run("/usr/local/bin/register-student", str(ctx.student), env={"TOKEN": token})


A hook runs at one of four phases: `create` (CREATE, before the notebooks are deployed),
`post_copy` (CREATE, after), `cleanup` (CLEANUP) and `reset` (RESET). For a workshop
folder WS, one phase runs, in this order, whichever of these exist:

1. the public handler module's function (modules of the package `wodmail.workshops`,
   the repository's top-level `workshops/` folder);
2. the public script `<phase>-<WS>.sh` (`post-copy-<WS>.sh` for post_copy);
3. the private handler module's function (`.py` files of `handlers.private`);
4. the private script.

Public before private, as the procmail API did; within a side the module runs before the
script. The first failure stops the phase (the procmail API ran under `set -e`). Where the
public module defines a phase, the public script of that phase does not run: the module
replaces it, and the order's hook list says so. The configuration key
`hooks.use_scripts: [WKSHP-X, ...]` reverses that per workshop: the public module of those
workshops does not run, and their stock public scripts do (the way back). Private modules
and scripts always run.

Handler modules declare `WORKSHOPS = ("WKSHP-Docker101", ...)` (content folder names: a
challenge `CHLG-x` uses the module of `WKSHP-x`), optionally `PROVIDES = ("HTTPPORT", ...)`
(the per-student template variables their hooks set, which `wodmail render` then lists as
"set at CREATE" instead of undefined), and define any of `async def create(ctx)`,
`post_copy(ctx)`, `cleanup(ctx)`, `reset(ctx)` taking a `HookContext`. Files whose name
starts with `_` are helpers, not handlers. Two modules of one folder claiming the same
workshop, a module that fails to import or a hook that is not `async` is a configuration
error, reported when the hook set is loaded (daemon start, `check`). A handler that
raises fails the order with `HookFailed` naming the module, except `TransientError`,
which passes through so the dispatcher can retry.

Appliances. A workshop with `monoappliance` or `multiappliance` has a host of its own;
`ctx.appliance()` (or `ctx.appliance("10.0.0.5")` for another one) gives an `Appliance`
on it, over one ssh connection the daemon keeps per appliance and shares between orders.
It logs in as `appliances.user` (default WODUSER) with its key; the host key is pinned
(see `wodmail check-config` and `wodmail appliance forget`)::

    async def create(ctx: HookContext) -> None:
        app = ctx.appliance()
        user = f"student{ctx.student}"
        await app.run("chpasswd", sudo=True, input=f"{user}:{ctx.password}\n")
        await app.write_file(f"/student/{user}/.ssh/authorized_keys", key, mode=0o600,
                             owner=user, group=user, sudo=True)
        await app.run("docker", "compose", "up", "-d", user=user)

- `await app.run(*argv, input=None, sudo=False, user=None, timeout=None, check=True)`
  returns `Completed` (`status`, `stdout`, `stderr`, `ok`). argv is quoted for the remote
  shell (no shell syntax: run `"sh", "-c", script` for that). `sudo=True` runs it as root
  (`sudo -n`); `user="student3"` as that user with a login environment, home and groups
  (`sudo -n -u student3 -i`, as `sudo su - student3` did). Secrets go in `input` (stdin),
  never in argv, which every user of the appliance can read with `ps`. `timeout` defaults
  to `appliances.command_timeout_seconds`; past it the command is stopped.
- `await app.write_file(path, data, mode=0o644, owner=None, group=None, sudo=False)`
  replaces `path` at once (a temp file in its folder, renamed over it).
- `await app.read_file(path, sudo=False)` -> bytes; `await app.read_tar(folder,
  sudo=False, user=None)` -> a tar stream (bytes) of the folder's content.

Each call is shown after its hook in `wodmail show`, as `appliance <address>: <command>`
with its time and output (the last 64 KiB, secrets masked). Errors: `PeerUnavailable`
(the appliance cannot be reached or a command timed out: the order is retried until its
deadline), `PeerMisconfigured` (login refused, host key changed, sudo asks for a password:
the order fails, an admin must fix it), `ApplianceCommandFailed` (a command exited
non-zero with `check=True`; `status` and `output` say how).

Legacy scripts run only when present and executable, with the script's folder as working
directory, stdin from /dev/null, stdout and stderr captured together (the last 64 KiB are
kept), in their own process group, which is killed when the hook times out. Exiting
non-zero fails the order with the output kept. Scripts left running in the background
after the script itself exits are not waited for.

A script's environment is not the daemon's (which may hold secrets): it is PATH, HOME and
LANG from the daemon, USER and LOGNAME of the account the daemon runs as (the stock
`create-appliance.sh` uses `$USER`), and the procmail API's variables: `stdid` (N: a
RESET range runs the reset hooks once per student, as procmail-action.sh's loop did), `w`
(W), `ws` (WS), `wid` (the API-DB workshop id, when known), `stddir` (HOME), `randompw` (the
student's new password: CREATE, CLEANUP and RESET), `WODRTARGET` (only when the workshop has
an appliance: the student's own on a multi-appliance workshop), and one addition:

`WODMAIL_VARS_FILE`: an empty file the script may write `KEY=VALUE` lines to (blank lines
and `#` comments allowed, quotes around a value removed). They become per-student template
variables for this student and workshop, like `ctx.student_vars` of a handler module: the
procmail API's scripts used to ansible-vault them into `pass/variables_<W>_<stdid>.yml`.
The file must stay a regular file of the script's user of at most 1 MiB: a symbolic link,
a hard link, a fifo or another user's file in its place fails the hook, unread.

Secrets: a line `WODMAIL_SECRET=value` in that file is not a variable; the value (4
characters or more; 64 such lines at most) is masked as `***` in the hook's output (the
script's own output included, even when it failed), in its error, in the logs and in
`wodmail show`, as tokens and passwords wodmail knows are. A handler module does the same
with `ctx.secret(value)`, which returns the value. A script's whole output is masked once
it has ended, so the line may come anywhere in it; a handler calls `ctx.secret` before the
value can show up in an error or a log line.
Appliance workshops (see the README's "Appliance workshops" for a walk-through):
`ctx.appliance()` gives the `Appliance` of the student (WODRTARGET) over wodmail's kept ssh
connection: `run(*argv, input=..., sudo=..., user=...)` returning `Completed`, `write_file`,
`read_file`, `read_tar`; each call is a timed step in `wodmail show`. Secrets go through
`input` (stdin), never argv. On top of it, the steps the stock scripts shared:
`setup_student_account(ctx)` (`create-appliance.sh`: password, home from /etc/skel, the
student's key; returns the `ApplianceUser`), `reset_student_account(ctx)`
(`reset-appliance.sh`), `set_htpasswd(ctx, path)`, `ComposeProject(ctx, name)` (the
student's docker compose project: `write`, `build`, `up`, `wait_port`, `exec`, `jupyter_token`,
`set_password`, `completion`, `down`; compose v2 or v1), `student_port(ctx, key)` (BASE +
N - range[0]), and on the backend `read_public_key(ctx)`, `read_home_file` and
`write_home_file` (files in the student's home, never through a link), and
`write_ssh_config_block` (a workshop's own block at the top of `~/.ssh/config`).

Inside wodmail: `phases` runs the hooks of a phase (`Hooks`), `context` holds
`HookContext`, `scriptenv` who scripts run as; `_loader`, `_scripts` and `_process` are
private to this package.
"""

from wodmail.appliances import Appliance, Completed
from wodmail.hooks.accounts import (
    ApplianceUser,
    read_public_key,
    reset_student_account,
    set_htpasswd,
    setup_student_account,
)
from wodmail.hooks.compose import ComposeProject
from wodmail.hooks.context import HookContext
from wodmail.hooks.homefiles import read_home_file, write_home_file, write_ssh_config_block
from wodmail.hooks.ports import student_port

__all__ = [
    "Appliance",
    "ApplianceUser",
    "ComposeProject",
    "Completed",
    "HookContext",
    "read_home_file",
    "read_public_key",
    "reset_student_account",
    "set_htpasswd",
    "setup_student_account",
    "student_port",
    "write_home_file",
    "write_ssh_config_block",
]
