"""What Podman101 and Podman201 share: the student works on the podman appliance over ssh.

CREATE (`create-WKSHP-Podman*.sh`): the student's podman leftovers removed (the reset
script, which the create script ran first), the appliance account set up, HTTPPORT = the
workshop's base + N - range[0] for the notebooks, and `Host <appliance>` / `Port SSHPORT` in
the student's `~/.ssh/config` on the backend. The stock scripts wrote that entry to a
scratch file and never installed it (an upstream defect): here it is installed, in a marked
block as Docker101's.
"""

from __future__ import annotations

from wodmail.hooks import (
    Appliance,
    HookContext,
    setup_student_account,
    student_port,
    write_ssh_config_block,
)

# What the stock reset scripts removed, as the student, each allowed to fail (`&& true`).
PODMAN_LEFTOVERS = (
    ("podman", "stop", "-i", "--all"),
    ("podman", "rm", "--all", "--force"),
)


async def remove_leftovers(app: Appliance, user: str, commands: tuple[tuple[str, ...], ...]
                           ) -> None:
    for argv in commands:
        await app.run(*argv, user=user, check=False)


async def create(ctx: HookContext, workshop: str) -> None:
    http_port = student_port(ctx, f"HTTPPORT-{workshop}")
    ssh_port = int(str(ctx.variable(f"SSHPORT-{workshop}")).strip())
    await setup_student_account(ctx)
    ctx.student_vars["HTTPPORT"] = http_port
    write_ssh_config_block(ctx, workshop, f"Host {ctx.target}\n    Port {ssh_port}\n"
                                          "    StrictHostKeyChecking accept-new\n")
