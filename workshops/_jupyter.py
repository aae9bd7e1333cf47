"""What the four Jupyter-container workshops share (Spark101, ML101, DataVisu101,
Tensorflow101): a per-student container on the appliance, built FROM the appliance's
`<name>lab:latest` image (made by the installation's `setup-WKSHP-X.sh`), running a Jupyter
server whose token the notebooks use.

As the stock `create-WKSHP-X.sh` did, for student N, with ports BASE + N - range[0]:

- the student's appliance account is reset and set up (`create-appliance.sh`);
- the project `<name>N` in /tmp/<name>.N: a Dockerfile adding the account studentN (uid N,
  group 100) with the workshop's notebooks cloned into its home, and a compose file
  publishing the HTTP port on 8888 and the workshop's extra ports;
- once up, the token from `jupyter lab list` becomes the per-student variable (SPARKTOK ...)
  with HTTPPORT (and the first extra port where the script stored it).

Unlike the scripts: the student's account in the container gets the order's password
through `chpasswd` on stdin once the container runs (the scripts baked one fixed hash into
every image); the token is read when the server answers, not after a fixed `sleep 5`; the
container is found through `compose ps` (compose v1 or v2); the ratio at CLEANUP is read
from the container's notebooks without extracting them on the backend.

With `appliances.container_network: host` (no bridge, as in the tests) the container shares
the appliance's network, so the server listens on the student's HTTP port itself
(`JUPYTER_PORT`, honoured by the Jupyter docker-stacks images).
"""

from __future__ import annotations

from dataclasses import dataclass

from wodmail.hooks import (
    ComposeProject,
    HookContext,
    reset_student_account,
    setup_student_account,
    student_port,
)


@dataclass(frozen=True)
class JupyterLab:
    """One Jupyter-container workshop."""

    workshop: str
    """WKSHP-X."""
    name: str
    """The image family: `<name>:latest` on the appliance, project `<name>N`."""
    token_var: str
    """The per-student variable the token goes to (SPARKTOK ...)."""
    notebooks_url: str
    """What the Dockerfile clones into the student's home in the container."""
    extra_ports: tuple[tuple[str, int], ...] = ()
    """(base port key, container port) beyond HTTP; the first one's value is stored as a
    variable when `extra_var` names it."""
    extra_var: str | None = None

    @property
    def http_key(self) -> str:
        return f"HTTPPORT-{self.workshop}"

    @property
    def provides(self) -> tuple[str, ...]:
        return (self.token_var, "HTTPPORT", *((self.extra_var,) if self.extra_var else ()))

    @property
    def images(self) -> tuple[str, ...]:
        return (f"{self.name}:latest",)

    def service(self, ctx: HookContext) -> str:
        return f"{self.name}{ctx.student}"

    async def create(self, ctx: HookContext) -> None:
        project = ComposeProject(ctx, self.name)
        await project.down(images=(project.project,))
        await setup_student_account(ctx)
        http_port = student_port(ctx, self.http_key)
        extras = [(student_port(ctx, key), inside) for key, inside in self.extra_ports]
        await project.write(self._files(ctx, http_port, extras), executable=("entrypoint.sh",))
        await project.build(project.project)
        await project.up()
        await project.wait_port(http_port)
        service = self.service(ctx)
        if ctx.password:
            await project.set_password(service, ctx.password)
        inside = http_port if ctx.container_network == "host" else 8888
        token = ctx.secret(await project.jupyter_token(service, inside))
        ctx.student_vars[self.token_var] = token
        ctx.student_vars["HTTPPORT"] = http_port
        if self.extra_var and extras:
            ctx.student_vars[self.extra_var] = extras[0][0]

    async def cleanup(self, ctx: HookContext) -> None:
        """The ratio of the notebooks in the container (cleanup-container-ratio.sh)."""
        project = ComposeProject(ctx, self.name)
        ctx.completion = await project.completion(self.service(ctx))

    async def reset(self, ctx: HookContext) -> None:
        project = ComposeProject(ctx, self.name)
        await reset_student_account(ctx)
        await project.down(images=(project.project,))

    def _files(self, ctx: HookContext, http_port: int, extras: list[tuple[int, int]]
               ) -> dict[str, str]:
        assert ctx.home is not None
        return {
            "Dockerfile": self._dockerfile(ctx, str(ctx.home), http_port),
            "entrypoint.sh": "#!/bin/sh\nexport HTTPPORT\nexec tini -g -- start-notebook.sh\n",
            "docker-compose.yml": self._compose(ctx, http_port, extras),
        }

    def _dockerfile(self, ctx: HookContext, home: str, http_port: int) -> str:
        n = ctx.student
        return (
            f"FROM {self.name}:latest\n"
            "USER root\n"
            "COPY entrypoint.sh /usr/local/bin/wodmail-entrypoint.sh\n"
            'ENTRYPOINT ["/usr/local/bin/wodmail-entrypoint.sh"]\n'
            f"RUN mkdir -p {home}\n"
            f"RUN useradd student{n} -u {n} -g 100 -d {home}\n"
            f"RUN chown student{n}:users {home}\n"
            f"WORKDIR {home}\n"
            f"USER student{n}\n"
            f"ENV NB_USER student{n}\n"
            f"ENV NB_UID {n}\n"
            f"ENV HTTPPORT {http_port}\n"
            f"RUN git clone {self.notebooks_url} {home}/\n"
            f"RUN /opt/conda/bin/jupyter-nbconvert --clear-output --inplace {home}/*.ipynb\n"
        )

    def _compose(self, ctx: HookContext, http_port: int, extras: list[tuple[int, int]]) -> str:
        service = self.service(ctx)
        head = (f"version: '3.5'\nservices:\n  {service}:\n    image: {service}\n"
                "    build: .\n")
        if ctx.container_network == "host":
            return head + ("    network_mode: host\n    environment:\n"
                           f"      - JUPYTER_PORT={http_port}\n")
        ports = [f'      - "{http_port}:8888"'] + [f'      - "{outside}:{inside}"'
                                                  for outside, inside in extras]
        return head + "    ports:\n" + "\n".join(ports) + "\n"
