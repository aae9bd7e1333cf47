"""Shared fixtures: a config on temp dirs and a running daemon on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from wodmail.config import Config, parse_config
from wodmail.dispatch.dispatcher import Runner, noop_runner
from wodmail.logs import configure_logging
from wodmail.service import Daemon

# The helpers of tests/support (tests/ is on sys.path: this conftest's folder). Their
# fixtures are registered here once, for every test module.
pytest.register_assert_rewrite("support")
pytest_plugins = [
    "support.e2e", "support.standin_fixtures", "support.slapd_fixture", "support.relay",
    "support.local_users", "support.appliances", "support.appliance_pool",
    "support.docker_engine",
]

@pytest.fixture(autouse=True)
def _daemon_logging() -> None:
    """Each test starts with the daemon's logging (JSON lines on stderr, info and up): admin
    commands run in-process (`cli.main`) configure it for the whole process, quieter."""
    configure_logging()


WORKSHOPS = ("WKSHP-API101", "WKSHP-K8S101", "WKSHP-OneView", "WKSHP-Docker101")


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    public = tmp_path / "notebooks"
    for name in WORKSHOPS:
        (public / name).mkdir(parents=True)
    return public


@pytest.fixture
def make_config(tmp_path: Path, notebooks: Path) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        data: dict[str, Any] = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "status": {"listen": None},
            "state_dir": str(tmp_path / "state"),
            "notebooks": {"public": str(notebooks)},
        }
        data.update(overrides)
        return parse_config(data, "test-config")

    return make


@pytest.fixture
async def start_daemon() -> AsyncIterator[Callable[..., Any]]:
    daemons: list[Daemon] = []

    async def start(config: Config, runner: Runner = noop_runner) -> Daemon:
        daemon = Daemon(config, runner)
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.stop(grace=5)
