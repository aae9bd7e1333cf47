"""Handler for WKSHP-Concourse101: the student's Concourse (and its PostgreSQL) on the
appliance, as wod-backend's `create-/reset-WKSHP-Concourse101.sh` ran them with compose.

CREATE, for student N, `httpport = HTTPPORT-WKSHP-Concourse101 + N - range[0]`: the previous
project removed, the appliance account set up, then the project `concourselabN` in
/tmp/concourselab.N: `postgres` and `concourse/concourse:7.7.1-ubuntu quickstart` with a
local user `studentN` whose password is the order's, web on httpport; HTTPPORT for the
notebooks. CLEANUP: nothing, as the script. RESET: `reset-appliance.sh` and the project down.

Unlike the script: Concourse reaches its database by the compose service name, which both
compose versions resolve (the script used v1's container name, which v2 does not have); the
password is in an env file readable by the student only, not in the compose file.
Note that a docker group member can still read a container's environment
(`docker inspect`): on a shared appliance students should not share that group.

The appliance provides: users studentN in its docker group, docker with compose v2 or v1,
and the images `postgres` and `concourse/concourse:7.7.1-ubuntu` (pulled, or pre-loaded).
"""

from __future__ import annotations

from wodmail.hooks import (
    ComposeProject,
    HookContext,
    reset_student_account,
    setup_student_account,
    student_port,
)

WORKSHOPS = ("WKSHP-Concourse101",)
PROVIDES = ("HTTPPORT",)
NAME = "concourselab"
CONCOURSE_IMAGE = "concourse/concourse:7.7.1-ubuntu"
IMAGES = ("postgres", CONCOURSE_IMAGE)


async def create(ctx: HookContext) -> None:
    http_port = student_port(ctx, "HTTPPORT-WKSHP-Concourse101")
    project = ComposeProject(ctx, NAME)
    await project.down()
    await setup_student_account(ctx)
    await project.write(_files(ctx, http_port), private=(".env.concourse",))
    await project.up()
    await project.wait_port(http_port)
    ctx.student_vars["HTTPPORT"] = http_port


async def reset(ctx: HookContext) -> None:
    await reset_student_account(ctx)
    await ComposeProject(ctx, NAME).down()


def _files(ctx: HookContext, http_port: int) -> dict[str, str]:
    n, target = ctx.student, ctx.target
    db = f"{NAME}-db-{n}"
    host_network = ctx.container_network == "host"
    db_host = "127.0.0.1" if host_network else db
    network = "    network_mode: host\n" if host_network else ""
    web = f"      - CONCOURSE_BIND_PORT={http_port}\n" if host_network else ""
    ports = "" if host_network else f'    ports: ["{http_port}:8080"]\n'
    privileged = "    privileged: true\n" if ctx.privileged_containers else ""
    compose = (
        '---\nversion: "3"\n\nservices:\n'
        f"  {db}:\n    image: postgres\n{network}    environment:\n"
        "      - POSTGRES_DB=concourse\n"
        f"      - POSTGRES_PASSWORD={NAME}{n}_pass\n"
        f"      - POSTGRES_USER={NAME}{n}_user\n"
        "      - PGDATA=/database\n\n"
        f"  concourse:\n    image: {CONCOURSE_IMAGE}\n    command: quickstart\n"
        f"{privileged}    depends_on: [{db}]\n{network}{ports}"
        "    env_file: [.env.concourse]\n    environment:\n"
        f"      - CONCOURSE_POSTGRES_HOST={db_host}\n"
        f"      - CONCOURSE_POSTGRES_USER={NAME}{n}_user\n"
        f"      - CONCOURSE_POSTGRES_PASSWORD={NAME}{n}_pass\n"
        "      - CONCOURSE_POSTGRES_DATABASE=concourse\n"
        f"      - CONCOURSE_EXTERNAL_URL=http://{target}:8080\n"
        "      - CONCOURSE_MAIN_TEAM_LOCAL_USER=admin\n"
        f"{web}"
    )
    secret = f"CONCOURSE_ADD_LOCAL_USER=student{n}:{ctx.password or ''}\n"
    return {"docker-compose.yml": compose, ".env.concourse": secret}
