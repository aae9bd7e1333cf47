"""Handler for WKSHP-Podman201: podman and OpenShift, as wod-backend's
`create-/reset-WKSHP-Podman201.sh` did (see `_podman`).

RESET: `reset-appliance.sh`, then, as the student on the appliance: `oc login` to the
OpenShift endpoint OCENDPOINT (group_vars) with the new password on stdin (the script put it
in the command line), the workshop's projects deleted, the student's podman containers,
quadlet units, networks, volumes, pods and images removed, the workshop's files deleted.
Each step may fail, as in the script (`&& true`).

The stock create script also downloaded the `oc` client from an internal HPE address onto
the backend; the appliance must provide `oc` itself here.

The appliance provides: users studentN with rootless podman and a systemd user session, the
`oc` client reaching OCENDPOINT:6443, the admin account with NOPASSWD sudo; SSHPORT-,
HTTPPORT-WKSHP-Podman201 and OCENDPOINT in the group_vars.
"""

from __future__ import annotations

from wodmail.hooks import HookContext, reset_student_account

from . import _podman

WORKSHOPS = ("WKSHP-Podman201",)
PROVIDES = ("HTTPPORT",)
FILES = ("my-persistent-storage", "my-deployment-service-route.yaml", "my-deployment.yaml",
         "database.yml", "frontend.yml", "payment-processor.yml", ".local",
         ".config/containers/systemd")


async def create(ctx: HookContext) -> None:
    await reset(ctx)
    await _podman.create(ctx, WORKSHOPS[0])


async def reset(ctx: HookContext) -> None:
    app = ctx.appliance()
    user = await reset_student_account(ctx, app)
    n = ctx.student
    endpoint = str(ctx.variable("OCENDPOINT")).strip().strip('"').rstrip(",")
    await app.run("oc", "login", "-u", user.name, "--insecure-skip-tls-verify",
                  f"https://{endpoint}:6443", user=user.name, input=f"{ctx.password or ''}\n",
                  check=False)
    await _podman.remove_leftovers(app, user.name, (
        ("oc", "delete", "project", f"my-project{n}"),
        ("oc", "delete", "project", f"declarative{n}"),
        ("oc", "delete", "project", "patient-portal-student"),
        *_podman.PODMAN_LEFTOVERS,
        ("systemctl", "--user", "stop", "frontend.service", "payment-processor.service",
         "database.service"),
        ("podman", "network", "prune", "--force"),
        ("podman", "volume", "prune", "--force"),
        ("podman", "pod", "prune", "--force"),
        ("podman", "image", "prune", "--force"),
        ("sh", "-c", 'cd "$1" && shift && rm -rf -- "$@"', "rm", user.home, *FILES),
        ("systemctl", "--user", "daemon-reload"),
    ))
