"""Handler for WKSHP-Podman101: the student's account on the podman appliance, as
wod-backend's `create-/reset-WKSHP-Podman101.sh` did (see `_podman`).

RESET: `reset-appliance.sh`, then, as the student, every container stopped and removed, the
images the workshop builds or pulls removed, the workshop's files and `~/.local` deleted.

The appliance provides: users studentN with podman (rootless), the admin account with
NOPASSWD sudo; SSHPORT-WKSHP-Podman101 and HTTPPORT-WKSHP-Podman101 in the group_vars.
"""

from __future__ import annotations

from wodmail.hooks import HookContext, reset_student_account

from . import _podman

WORKSHOPS = ("WKSHP-Podman101",)
PROVIDES = ("HTTPPORT",)
# What the workshop's notebooks pull or build, removed at RESET as the stock script did.
LEFTOVER_IMAGES = ("hello-world", "nginx", "fedora", "localhost/myhttpd:v1",
                   "docker.io/redhat/ubi9", "docker.io/library/nginx",
                   "localhost/nginx-reverse-proxy")
FILES = ("kubepodman.yml", "compose.yml", "Containerfile", "Containerfile-backend",
         "Containerfile-nginx", "default.conf", "index.html", "nginx-index.html", ".local")


async def create(ctx: HookContext) -> None:
    await reset(ctx)
    await _podman.create(ctx, WORKSHOPS[0])


async def reset(ctx: HookContext) -> None:
    app = ctx.appliance()
    user = await reset_student_account(ctx, app)
    await _podman.remove_leftovers(app, user.name, (
        *_podman.PODMAN_LEFTOVERS,
        ("podman", "rmi", "--force", *LEFTOVER_IMAGES),
        ("sh", "-c", 'cd "$1" && shift && rm -rf -- "$@"', "rm", user.home, *FILES),
    ))
