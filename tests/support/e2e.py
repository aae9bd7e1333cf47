"""Helpers for end-to-end tests: a sandboxed backend, a running daemon, orders in, results out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.sha512crypt import sha512_crypt_matches
from wodmail.config import Config
from wodmail.dev.sandbox import Sandbox, make_sandbox
from wodmail.dev.standins.mail_clients import send_portal_style
from wodmail.journal.jobs import Job
from wodmail.journal.store import JournalReader
from wodmail.lifecycle.backend import Backend
from wodmail.lifecycle.verbs import LifecycleRunner
from wodmail.service import Daemon


class Backend2E:
    """A daemon running the real lifecycle against a sandbox."""

    def __init__(self, sandbox: Sandbox, config: Config) -> None:
        self.sandbox = sandbox
        self.config = config
        self.daemon = Daemon(config, LifecycleRunner(Backend.from_config(config)))
        self.reader: JournalReader | None = None

    async def start(self) -> Backend2E:
        await self.daemon.start()
        self.reader = JournalReader(self.config.journal_path())
        return self

    async def stop(self, grace: float = 5) -> None:
        await self.daemon.stop(grace)

    async def send(self, subject: str, body: str) -> None:
        await asyncio.to_thread(send_portal_style, "127.0.0.1", self.daemon.port, subject, body)

    async def order(self, subject: str, body: str, *, limit: float = 30) -> Job:
        """Sends one portal-style order and waits for its result."""
        known = {job.id for job in self.jobs()}
        await self.send(subject, body)
        deadline = time.monotonic() + limit
        while True:
            new = [job for job in self.jobs() if job.id not in known and job.subject == subject]
            if new and new[0].state.finished:
                return new[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no result for {subject!r} after {limit} s: {new}")
            await asyncio.sleep(0.02)

    async def wait(self, job_id: int, *, limit: float = 30) -> Job:
        deadline = time.monotonic() + limit
        while True:
            job = self.reader.get(job_id)  # type: ignore[union-attr]
            if job is not None and job.state.finished:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} unfinished after {limit} s: {job}")
            await asyncio.sleep(0.02)

    def jobs(self) -> list[Job]:
        return self.reader.list_jobs(newest_first=False)  # type: ignore[union-attr]


def portal_writes(sandbox: Sandbox) -> list[tuple[str, str, Any]]:
    return [(c.method, c.path, c.json) for c in sandbox.portal.writes()]


def hub_calls(sandbox: Sandbox) -> list[tuple[str, str]]:
    """The calls that change the hub (its reads left out)."""
    return [(c.method, c.path) for c in sandbox.hub.calls if c.method != "GET"]


def shadow_matches(root: Path, user: str, password: str) -> bool:
    """The sandbox shadow file's hash for `user` is that of `password` (SHA-512 crypt)."""
    for line in (root / "etc" / "shadow").read_text().splitlines():
        name, hashed = line.split(":")[:2]
        if name == user:
            return hashed.startswith("$6$") and sha512_crypt_matches(password, hashed)
    raise AssertionError(f"no {user} in the sandbox shadow file")


def listing(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


# Fixtures (this module is a plugin registered in tests/conftest.py).


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """Students 1..10, BASESTDID 100, stand-in portal and hub; closed after the test."""
    box = make_sandbox(tmp_path / "sandbox", students=range(1, 11), base_id=100)
    yield box
    box.close()


@pytest.fixture
async def backend(sandbox: Sandbox) -> AsyncIterator[Callable[..., Any]]:
    """Starts a daemon on the sandbox (config overrides as keyword arguments); each one
    started is stopped after the test."""
    started: list[Backend2E] = []

    async def start(**overrides: Any) -> Backend2E:
        running = await Backend2E(sandbox, sandbox.config(**overrides)).start()
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()
