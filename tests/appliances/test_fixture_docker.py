"""The Docker engine fixture (tests/support/docker_engine.py): inside an appliance, a student
runs docker compose (v1 and v2) on the stand-in lab images as WoD's container workshops do."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from support.appliances import Appliance, ApplianceFactory
from support.docker_engine import DockerEngine

LIMIT = 300.0
STUDENT = 401

# As create-WKSHP-Spark101 writes them (the token file, the Dockerfile's steps), with host
# networking instead of published ports and a loop instead of `sleep 3`.
ENTRYPOINT = """\
export HTTPPORT
tini -g -- start-notebook.sh &
until jupyter lab list | grep -q token; do sleep 0.2; done
jupyter lab list | tail -1 | cut -d'=' -f2 | cut -d' ' -f1 > /student/student{n}/sparktoken
sleep infinity
"""
DOCKERFILE = """\
FROM sparklab:latest
USER root
COPY dockerd-entrypoint.sh /usr/local/bin/
ENTRYPOINT /usr/local/bin/dockerd-entrypoint.sh
RUN mkdir -p /student/student{n}
RUN useradd student{n} -u {n} -g 100 -d /student/student{n}
RUN chown student{n}:users /student/student{n}
RUN perl -pi -e "s|^student{n}:!:|student{n}:\\$6\\$salt\\$hash:|" /etc/shadow
WORKDIR /student/student{n}
USER student{n}
ENV NB_USER student{n}
ENV NB_UID {n}
ENV HTTPPORT {port}
RUN git clone https://github.com/example/Apache-Spark-Tutorials /student/student{n}/
RUN /opt/conda/bin/jupyter-nbconvert --clear-output --inplace /student/student{n}/*.ipynb
"""
COMPOSE = """\
version: '3.5'
services:
  sparklab{n}:
    image: sparklab{n}
    build: .
    network_mode: host
"""
COMMANDS = {"v1": "docker-compose", "v2": "docker compose"}
NAMES = {"v1": "sparklab{n}_sparklab{n}_1", "v2": "sparklab{n}-sparklab{n}-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"waited {LIMIT} s for {what}"
        time.sleep(0.2)


def _project(appliance: Appliance, n: int, port: int) -> str:
    """The lab's files in /tmp/sparklab<n>, as the create script copies them there."""
    folder = f"/tmp/sparklab{n}"
    appliance.run("install", "-d", "-m", "0755", folder)
    for name, text, mode in (("dockerd-entrypoint.sh", ENTRYPOINT, "0755"),
                             ("Dockerfile", DOCKERFILE, "0644"),
                             ("docker-compose.yml", COMPOSE, "0644")):
        appliance.run("install", "-m", mode, "/dev/stdin", f"{folder}/{name}",
                      input=text.format(n=n, port=port))
    return folder


def _status(port: int, token: str) -> int:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_student_runs_a_lab_with_docker_compose(
        appliance_factory: ApplianceFactory, docker_engine: DockerEngine, version: str) -> None:
    appliance = appliance_factory(docker=True, compose=(version,),
                                  students=range(STUDENT, STUDENT + 2))
    n, port = STUDENT, _free_port()
    folder = _project(appliance, n, port)
    compose = COMMANDS[version]
    name = NAMES[version].format(n=n)

    started = time.monotonic()
    up = appliance.run("sh", "-c", f"cd {folder} && {compose} up --build -d",
                       user=f"student{n}", timeout=LIMIT)
    print(f"compose {version} up --build: {time.monotonic() - started:.1f} s")

    listed = appliance.run("sh", "-c", f"cd {folder} && {compose} ps", user=f"student{n}")
    assert name in listed.stdout, up.stdout + up.stderr + listed.stdout
    _wait(lambda: appliance.run("docker", "exec", name, "test", "-s",
                                f"/student/student{n}/sparktoken",
                                user=f"student{n}", check=False).returncode == 0, "the token")
    token = appliance.run("docker", "exec", name, "cat", f"/student/student{n}/sparktoken",
                          user=f"student{n}").stdout.strip()
    listing = appliance.run("docker", "exec", name, "jupyter", "lab", "list",
                            user=f"student{n}").stdout
    assert f":{port}/?token={token} :: /student/student{n}" in listing
    assert len(token) == 48
    assert _status(port, token) == 200
    assert _status(port, "wrong") == 403
    notebook = json.loads(appliance.run(
        "docker", "exec", name, "cat", f"/student/student{n}/2-Exercises.ipynb",
        user=f"student{n}").stdout)
    assert all(c.get("outputs", []) == [] for c in notebook["cells"]), "nbconvert left outputs"
    user = appliance.run("docker", "exec", name, "id", "-un", user=f"student{n}").stdout
    assert user.strip() == f"student{n}"

    appliance.run("sh", "-c", f"cd {folder} && {compose} down -t 1", user=f"student{n}")
    assert [c["Names"] for c in docker_engine.containers()] == []
    assert docker_engine.new_images(), "the lab's image is still there after down"
    docker_engine.reset()
    assert docker_engine.new_images() == []


@pytest.mark.parametrize("present", [("v1",), ("v2",), ("v1", "v2")])
def test_an_appliance_has_the_compose_versions_asked_for(
        appliance_factory: ApplianceFactory, present: tuple[str, ...]) -> None:
    appliance = appliance_factory(docker=True, compose=present, students=range(1, 2))

    def works(command: str) -> bool:
        return appliance.run("sh", "-c", f"{command} version", user="student1",
                             check=False).returncode == 0

    assert works("docker-compose") == ("v1" in present)
    assert works("docker compose") == ("v2" in present)
    assert appliance.run("docker", "ps", user="student1").returncode == 0
    assert appliance.run("docker", "ps", user="wodadmin").returncode == 0
    assert appliance.run("docker", "--version").stdout.startswith("Docker version 20.10")


DOCKER101 = """\
FROM dockerlab:latest
RUN mkdir -p /student/student{n}
RUN useradd student{n} -G docker -d /student/student{n}
RUN perl -pi -e "s|^student{n}:!:|student{n}:\\$6\\$salt\\$hash:|" /etc/shadow
RUN echo "student{n}   ALL=(ALL)       NOPASSWD: ALL" >> /etc/sudoers
WORKDIR /student/student{n}
RUN mkdir .ssh
RUN chmod 700 .ssh
RUN chown -R student{n}:docker /student/student{n}
ENTRYPOINT /usr/sbin/sshd -t && /usr/sbin/vsftpd /etc/vsftpd/vsftpd.conf && sleep infinity
"""
CONCOURSE = """\
---
version: "3"
services:
  concourselab-db-{n}:
    image: postgres
    network_mode: host
    environment:
      - POSTGRES_PASSWORD=concourselab{n}_pass
  concourse:
    image: concourse/concourse:7.7.1-ubuntu
    command: quickstart
    network_mode: host
    depends_on: [concourselab-db-{n}]
    environment:
      - CONCOURSE_BIND_PORT={port}
      - CONCOURSE_ADD_LOCAL_USER=student{n}:pw
"""


def test_the_docker101_and_concourse101_stand_ins(appliance_factory: ApplianceFactory) -> None:
    """Docker101's Dockerfile steps build on dockerlab; Concourse101's two services run
    (without `privileged: true`: see docker_engine.privileged_missing)."""
    appliance = appliance_factory(docker=True, compose=("v2",),
                                  students=range(STUDENT, STUDENT + 1))
    n, port = STUDENT, _free_port()
    as_student = {"user": f"student{n}", "timeout": LIMIT}
    for folder, name, text in ((f"/tmp/dockerlab{n}", "Dockerfile", DOCKER101),
                               (f"/tmp/concourselab{n}", "docker-compose.yml", CONCOURSE)):
        appliance.run("install", "-d", "-m", "0755", folder)
        appliance.run("install", "-m", "0644", "/dev/stdin", f"{folder}/{name}",
                      input=text.format(n=n, port=port))

    appliance.run("docker", "build", "-q", "-t", f"dockerlab{n}", f"/tmp/dockerlab{n}",
                  **as_student)
    ran = appliance.run("docker", "run", "--rm", "--entrypoint", "id", f"dockerlab{n}",
                        f"student{n}", **as_student)
    assert "(docker)" in ran.stdout
    appliance.run("sh", "-c", f"cd /tmp/concourselab{n} && docker compose up -d", **as_student)

    def info() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/info",
                                        timeout=30) as answer:
                return str(answer.read().decode())
        except OSError:
            return ""

    _wait(lambda: f"student{n}" in info(), "concourse's stand-in")
    names = appliance.run("docker", "ps", "--format", "{{.Names}}", **as_student).stdout
    assert sorted(names.split()) == [f"concourselab{n}-concourse-1",
                                     f"concourselab{n}-concourselab-db-{n}-1"]
