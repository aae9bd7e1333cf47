"""`ctx.appliance()` in a handler module run by the hook runner: the calls follow their hook
in the runs the order shows, and a failing command fails the hook with what it said."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.appliance_pool import Connect
from support.appliances import ApplianceFactory
from wodmail.errors import ConfigurationError, HookFailed
from wodmail.hooks import HookContext
from wodmail.hooks.phases import Hooks

WS = "WKSHP-Test101"

MODULE = f"""\
WORKSHOPS = ({WS!r},)


async def create(ctx):
    app = ctx.appliance()
    await app.run("chpasswd", sudo=True, input=f"student{{ctx.student}}:{{ctx.password}}\\n")
    await app.run("sh", "-c", "echo ready")


async def cleanup(ctx):
    await ctx.appliance().run("sh", "-c", "echo cannot stop dockerlab >&2; exit 3")
"""


def _ctx(pool, target: str | None) -> HookContext:
    return HookContext(student=2, workshop=WS, content=WS, password="Pw-2-0f9a8c7d",
                       target=target, appliances=pool)


async def test_appliance_calls_follow_their_hook_and_a_failure_keeps_the_output(
        appliance_factory: ApplianceFactory, connect_to: Connect, tmp_path: Path) -> None:
    appliance = appliance_factory()
    pool, _ = connect_to(appliance)
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "test101.py").write_text(MODULE)
    hooks = Hooks.load(public_handlers=None, private_handlers=tmp_path / "handlers")
    module = f"module {tmp_path / 'handlers' / 'test101.py'}"

    runs = await hooks.run("create", _ctx(pool, appliance.address))

    assert [(run.name, run.ok, run.output) for run in runs] == [
        (f"{module}:create", True, ""),
        (f"appliance {appliance.address}: sudo chpasswd", True, ""),
        (f"appliance {appliance.address}: sh -c 'echo ready'", True, "ready\n"),
    ]
    assert appliance.password_ok("student2", "Pw-2-0f9a8c7d")

    ctx = _ctx(pool, appliance.address)
    with pytest.raises(HookFailed) as failed:
        await hooks.run("cleanup", ctx)
    assert failed.value.hook == f"{module}:cleanup"
    assert failed.value.output == "cannot stop dockerlab\n"
    assert str(failed.value).endswith("exited with status 3")
    assert [(call.name, call.ok) for call in ctx.appliance_calls] == [
        (f"appliance {appliance.address}: sh -c 'echo cannot stop dockerlab >&2; exit 3'",
         False)]


def test_a_workshop_without_an_appliance_has_none_to_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"workshop {WS} has no appliance"):
        _ctx(None, None).appliance()
