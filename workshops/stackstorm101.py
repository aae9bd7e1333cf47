"""Handler for WKSHP-StackStorm101: the student's account on the shared StackStorm
appliance (monoappliance), as wod-backend's `create-/reset-WKSHP-StackStorm101.sh` did.

CREATE: the appliance account (`create-appliance.sh`) and the student's StackStorm login,
`/etc/st2/htpasswd`, with the order's password (the notebooks show it as PASSSTU, which the
workshop's `varpass` flag exposes). RESET: `reset-appliance.sh` and a new htpasswd password.
Passwords go through stdin (`htpasswd -i`), as the script already did for this one.

The appliance provides: users studentN, `htpasswd` and /etc/st2/htpasswd, the admin account
with NOPASSWD sudo.
"""

from __future__ import annotations

from wodmail.hooks import HookContext, reset_student_account, set_htpasswd, setup_student_account

WORKSHOPS = ("WKSHP-StackStorm101",)
HTPASSWD = "/etc/st2/htpasswd"


async def create(ctx: HookContext) -> None:
    app = ctx.appliance()
    await setup_student_account(ctx, app)
    await set_htpasswd(ctx, HTPASSWD, app)


async def reset(ctx: HookContext) -> None:
    app = ctx.appliance()
    await reset_student_account(ctx, app)
    await set_htpasswd(ctx, HTPASSWD, app)
