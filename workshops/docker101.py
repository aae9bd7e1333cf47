"""Handler for WKSHP-Docker101: the student's Docker lab container on the appliance and ssh
access to it, as wod-backend's `create-/reset-WKSHP-Docker101.sh` made and removed them.

CREATE, for student N, with APPMIN the first student of the workshop's range (`range[0]`),
`sshport = SSHPORT-WKSHP-Docker101 + N - APPMIN`, `httpport = HTTPPORT-WKSHP-Docker101 + N -
APPMIN` (both base ports are group_vars):

- the previous container removed, the appliance account set up (`create-appliance.sh`);
- the project `dockerlabN` in /tmp/dockerlab.N on the appliance: an image FROM
  `dockerlab:latest` with the account studentN (groups docker and sudo without password,
  the student's backend key authorized), started with compose publishing httpport and
  sshport -> 22; then the student's password set in the container (`chpasswd`, stdin);
- HTTPPORT as a per-student variable for the notebooks;
- `Host <appliance>` / `Port sshport` in the student's `~/.ssh/config` on the backend, in a
  block between marker comments (also naming the user, the key and `StrictHostKeyChecking
  accept-new`), replaced on each run while other entries stay. The block goes first, as
  ssh takes the first value it finds for each option, and ends with `Host *` so options
  that followed at the top of the file still apply to every host.

RESET: `reset-appliance.sh`, then the container, its image and project removed (found
through `compose ps`, so compose v2's names are found too, which the script's v1 names
missed).

Unlike the script: no fixed password hash for every container account (the student's own
password, set once the container runs); the image's ssh host keys are made when the
container starts (`ssh-keygen -A`), none is baked into the image; the container's sshd
listens on sshport itself with `appliances.container_network: host`.

The appliance provides: users studentN in its docker group, docker with compose v2 or v1,
the image `dockerlab:latest` (the installation's `setup-WKSHP-Docker101.sh` builds it) with
`useradd`, `sudo`, `sshd` and `ssh-keygen`, and (optional) `dockerd-entrypoint.sh` for
Docker-in-Docker.
"""

from __future__ import annotations

from wodmail.errors import AccountError, ConfigurationError
from wodmail.hooks import (
    ComposeProject,
    HookContext,
    read_public_key,
    reset_student_account,
    setup_student_account,
    student_port,
    write_ssh_config_block,
)

WORKSHOPS = ("WKSHP-Docker101",)
PROVIDES = ("HTTPPORT",)
NAME = "dockerlab"
IMAGES = (f"{NAME}:latest",)

HTTP_PORT_KEY = "HTTPPORT-WKSHP-Docker101"
SSH_PORT_KEY = "SSHPORT-WKSHP-Docker101"


async def create(ctx: HookContext) -> None:
    http_port, ssh_port = ports(ctx)
    project = ComposeProject(ctx, NAME)
    await project.down(images=(project.project,))
    await setup_student_account(ctx)
    await project.write(_files(ctx, http_port, ssh_port), executable=("entrypoint.sh",))
    await project.build(project.project)
    await project.up()
    await project.wait_port(ssh_port)
    if ctx.password:
        await project.set_password(project.project, ctx.password)
    configure_backend(ctx, http_port, ssh_port)


async def reset(ctx: HookContext) -> None:
    project = ComposeProject(ctx, NAME)
    await reset_student_account(ctx)
    await project.down(images=(project.project,))


def ports(ctx: HookContext) -> tuple[int, int]:
    """(httpport, sshport) of the student; ConfigurationError before anything is touched."""
    if not ctx.target:
        raise ConfigurationError(
            f"{ctx.workshop} needs an appliance, but its workshop record has neither "
            f"monoappliance nor multiappliance set"
        )
    return student_port(ctx, HTTP_PORT_KEY), student_port(ctx, SSH_PORT_KEY)


def configure_backend(ctx: HookContext, http_port: int, ssh_port: int) -> None:
    """HTTPPORT for the notebooks, and the ssh entry of the container in ~/.ssh/config."""
    if ctx.student is None or ctx.home is None or not ctx.target:
        raise AccountError(f"{ctx.workshop} create needs one student, its home and a target")
    ctx.student_vars["HTTPPORT"] = http_port
    write_ssh_config_block(ctx, WORKSHOPS[0], (
        f"Host {ctx.target}\n"
        f"    User student{ctx.student}\n"
        f"    Port {ssh_port}\n"
        "    IdentityFile ~/.ssh/id_rsa\n"
        "    StrictHostKeyChecking accept-new\n"
    ))
    ctx.log.info("docker101 ports", http_port=http_port, ssh_port=ssh_port, target=ctx.target)


def _files(ctx: HookContext, http_port: int, ssh_port: int) -> dict[str, str]:
    assert ctx.home is not None
    n, home = ctx.student, str(ctx.home)
    service = f"{NAME}{n}"
    dockerfile = (
        f"FROM {NAME}:latest\n"
        f"RUN mkdir -p {home}\n"
        f"RUN useradd student{n} -G docker -d {home}\n"
        f'RUN echo "student{n}   ALL=(ALL)       NOPASSWD: ALL" >> /etc/sudoers\n'
        f"WORKDIR {home}\n"
        "RUN mkdir -m 700 .ssh\n"
        "COPY authorized_keys .ssh/authorized_keys\n"
        f"RUN chmod 600 .ssh/authorized_keys && chown -R student{n}:docker {home}\n"
        "RUN rm -f /etc/ssh/ssh_host_*\n"
        "COPY entrypoint.sh /usr/local/bin/wodmail-entrypoint.sh\n"
        'ENTRYPOINT ["/usr/local/bin/wodmail-entrypoint.sh"]\n'
    )
    entrypoint = (
        "#!/bin/sh\n"
        "ssh-keygen -A\n"
        'mkdir -p /run/sshd && /usr/sbin/sshd -p "${SSHD_PORT:-22}"\n'
        "[ -x /usr/sbin/vsftpd ] && /usr/sbin/vsftpd /etc/vsftpd/vsftpd.conf &\n"
        "[ -x /usr/local/bin/dockerd-entrypoint.sh ] && exec /usr/local/bin/dockerd-entrypoint.sh\n"
        "exec sleep infinity\n"
    )
    compose = (f"version: '3.5'\nservices:\n  {service}:\n    image: {service}\n"
               "    build: .\n")
    if ctx.privileged_containers:
        compose += "    privileged: true\n"
    if ctx.container_network == "host":
        compose += f"    network_mode: host\n    environment:\n      - SSHD_PORT={ssh_port}\n"
    else:
        compose += f'    ports:\n      - "{http_port}:{http_port}"\n      - "{ssh_port}:22"\n'
    return {"Dockerfile": dockerfile, "entrypoint.sh": entrypoint,
            "docker-compose.yml": compose, "authorized_keys": read_public_key(ctx)}
