"""Handler for WKSHP-Ansible101: the student's account on the shared Ansible appliance
(monoappliance), as wod-backend's `create-/reset-WKSHP-Ansible101.sh` set it up.

CREATE, for student N:
- the appliance account (`create-appliance.sh`): new password, home back to the appliance's
  /etc/skel, the student's backend key as their only authorized key;
- on the backend, `~/.ssh/config` (host key checking for first contacts) and
  `~/.ssh/authorized_keys` = the student's own key, so the notebooks can ssh to localhost;
- the same `~/.ssh/config` in the student's home on the appliance;
- the student's entry in the appliance's `/etc/httpd/conf/htpasswd` with the new password.

RESET: `.ssh` removed and a new password on the appliance (`reset-appliance.sh`), the
student's appliance home emptied, and, beyond the script, the htpasswd entry given the new
password too, so the previous participant's web login stops working.

Unlike the script: the ssh config says `StrictHostKeyChecking accept-new` (a first contact
is accepted and remembered, a changed key refused) where the script turned checking off
(`no`); passwords go through stdin, never in a command line.

The appliance provides: users studentN, `htpasswd` (apache2-utils / httpd-tools) and the
file /etc/httpd/conf/htpasswd, the admin account with NOPASSWD sudo.
"""

from __future__ import annotations

from wodmail.hooks import (
    HookContext,
    read_public_key,
    reset_student_account,
    set_htpasswd,
    setup_student_account,
    write_home_file,
)

WORKSHOPS = ("WKSHP-Ansible101",)
HTPASSWD = "/etc/httpd/conf/htpasswd"
SSH_CONFIG = "Host *\n    StrictHostKeyChecking accept-new\n"


async def create(ctx: HookContext) -> None:
    app = ctx.appliance()
    user = await setup_student_account(ctx, app)
    write_home_file(ctx, ".ssh/config", SSH_CONFIG, mode=0o600)
    write_home_file(ctx, ".ssh/authorized_keys", read_public_key(ctx), mode=0o600)
    await app.run("sh", "-c", 'umask 077 && cat > "$1/.ssh/config"', "config", user.home,
                  user=user.name, input=SSH_CONFIG)
    await set_htpasswd(ctx, HTPASSWD, app)


async def reset(ctx: HookContext) -> None:
    app = ctx.appliance()
    user = await reset_student_account(ctx, app)
    await app.run("sh", "-c", 'cd "$1" && find . -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +',
                  "empty", user.home, user=user.name)
    await set_htpasswd(ctx, HTPASSWD, app)
