"""Fixtures for the stand-in peers (real HTTP on 127.0.0.1), shared by test modules.

A fixture plugin, registered once in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wodmail.dev.standins import StandinHub, StandinPortal

HUB_TOKEN = "hub-token-for-tests-5f1c9a"


@pytest.fixture
def make_portal() -> Iterator[Callable[..., StandinPortal]]:
    """Start a `StandinPortal(**kwargs)`; every one started is stopped after the test."""
    started: list[StandinPortal] = []

    def make(**kwargs: Any) -> StandinPortal:
        portal = StandinPortal(**kwargs).start()
        started.append(portal)
        return portal

    yield make
    for portal in started:
        portal.stop()


@pytest.fixture
def portal_standin(make_portal: Callable[..., StandinPortal]) -> StandinPortal:
    """A running API-DB stand-in with the default 180 s tokens and no records."""
    return make_portal()


@pytest.fixture
def hub_standin() -> Iterator[StandinHub]:
    """A running JupyterHub stand-in accepting `HUB_TOKEN` with the `servers` scope."""
    with StandinHub(HUB_TOKEN) as hub:
        yield hub
