"""wodmail's side of the test appliances (support.appliances): a config naming one, and
pools on it, closed after the test.

`connect_to(appliance, **appliances_settings)` returns `(pool, port)`: wodmail's
`AppliancePool` logging in as the appliance's admin with the test's admin key, and an
`Appliance` on its address whose calls are recorded in `port.calls`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from support.appliances import Appliance as TestAppliance
from support.appliances import KeyPair
from wodmail.appliances import Appliance, ApplianceCall, AppliancePool
from wodmail.config import Config, parse_config

LIMIT = 120.0


def appliance_settings(appliance: TestAppliance, key: KeyPair | Path,
                       **settings: Any) -> dict[str, Any]:
    """The `appliances` section reaching `appliance` as its admin with `key`."""
    private = key.private if isinstance(key, KeyPair) else key
    return {"user": appliance.admin, "key": str(private), **settings}


def appliance_config(state_dir: Path, appliance: TestAppliance, key: KeyPair | Path,
                     **settings: Any) -> Config:
    return parse_config({"state_dir": str(state_dir),
                         "appliances": appliance_settings(appliance, key, **settings)},
                        "test-config")


class RecordingAppliance(Appliance):
    """wodmail's `Appliance`, keeping the records of its calls in `calls`."""

    def __init__(self, pool: AppliancePool, address: str) -> None:
        self.calls: list[ApplianceCall] = []
        super().__init__(pool, address, record=self.calls.append)


Connect = Callable[..., tuple[AppliancePool, RecordingAppliance]]


@pytest.fixture
async def connect_to(tmp_path: Path, admin_keypair: KeyPair) -> AsyncIterator[Connect]:
    pools: list[AppliancePool] = []

    def connect(appliance: TestAppliance, *, key: KeyPair | Path | None = None,
                state_dir: Path | None = None,
                **settings: Any) -> tuple[AppliancePool, RecordingAppliance]:
        config = appliance_config(state_dir or tmp_path / "state", appliance,
                                  key or admin_keypair, **settings)
        pool = AppliancePool.from_config(config)
        pools.append(pool)
        return pool, RecordingAppliance(pool, appliance.address)

    yield connect
    for pool in pools:
        await pool.aclose()


async def eventually(condition: Callable[[], bool | Awaitable[bool]], what: str,
                     limit: float = LIMIT) -> None:
    """Wait until `condition()` holds (polled), failing with `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what}: not after {limit} s"
        await asyncio.sleep(0.05)
