"""Appliances in whole orders: a handler module sets the student's password on the
workshop's appliance during a CREATE sent over SMTP to the real daemon, each appliance call
shows in `wodmail show` with its time, and later orders reuse the daemon's connection."""

from __future__ import annotations

import asyncio
import json
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from support.appliance_pool import appliance_settings, eventually
from support.appliances import ApplianceFactory, KeyPair
from support.e2e import Backend2E
from wodmail import cli
from wodmail.config import load_config, parse_config
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox
from wodmail.journal.jobs import JobState
from wodmail.lifecycle.backend import Backend
from wodmail.lifecycle.verbs import LifecycleRunner

WS = SAMPLE_WORKSHOP
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="chpasswd -R and chown need root")

HANDLER = f"""\
WORKSHOPS = ({WS!r},)


async def create(ctx):
    app = ctx.appliance()
    user = f"student{{ctx.student}}"
    await app.run("chpasswd", sudo=True, input=f"{{user}}:{{ctx.password}}\\n")
    done = await app.run("hostname")
    ctx.student_vars["APPLIANCE_HOST"] = done.stdout.strip()
"""


@needs_root
async def test_a_create_sets_the_password_on_the_appliance_and_show_lists_the_calls(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    appliance = appliance_factory(students=range(1, 6))
    box, config_file = _backend(tmp_path, appliance, admin_keypair)
    handlers = tmp_path / "handlers"
    config = load_config(config_file)
    try:
        wod = await Backend2E(box, config).start()
        try:
            first = await wod.order("CREATE 3 3 p3@example.com", WS, limit=120)
            second = await wod.order("CREATE 4 4 p4@example.com", WS, limit=120)
            pool = wod.daemon._runner.backend.appliances  # type: ignore[attr-defined]
            opened = pool.opened
        finally:
            await wod.stop()
    finally:
        box.close()

    assert first.state is JobState.DONE, first.reason
    assert second.state is JobState.DONE, second.reason
    assert opened == 1, "the second order opened a connection of its own"
    assert appliance.password_ok("student3", first.result["password"])
    assert appliance.password_ok("student4", second.result["password"])
    calls = [hook for hook in first.result["hooks"] if hook["name"].startswith("appliance ")]
    assert [(hook["name"], hook["ok"]) for hook in calls] == [
        (f"appliance {appliance.address}: sudo chpasswd", True),
        (f"appliance {appliance.address}: hostname", True)]
    assert calls[1]["output"] == f"{appliance.hostname}\n"
    assert first.result["password"] not in json.dumps(first.result["hooks"])

    capsys.readouterr()
    assert cli.main(["show", str(first.id), "--config", str(config_file)]) == 0
    shown = capsys.readouterr().out
    hooks = shown[shown.index("  hooks:\n"):].splitlines()[1:5]
    timed = r": ok \d+ ms"
    assert re.fullmatch(rf"    - module {re.escape(str(handlers))}/sample101.py:create{timed}",
                        hooks[0]), shown
    assert re.fullmatch(rf"    - appliance {appliance.address}: sudo chpasswd{timed}",
                        hooks[1]), shown
    assert re.fullmatch(rf"    - appliance {appliance.address}: hostname{timed}", hooks[2])
    assert hooks[3] == f"      | {appliance.hostname}"

@needs_root
async def test_an_unreachable_appliance_is_retried_until_it_answers(
        appliance_factory: ApplianceFactory, admin_keypair: KeyPair, tmp_path: Path) -> None:
    appliance = appliance_factory(students=range(1, 6))
    box, config_file = _backend(tmp_path, appliance, admin_keypair)
    appliance.stop()
    try:
        wod = await Backend2E(box, load_config(config_file)).start()
        try:
            await wod.send("CREATE 2 2 p2@example.com", WS)
            await eventually(lambda: _retrying(wod), "the hooks retried")
            await asyncio.to_thread(appliance.start)
            job = await wod.wait(wod.jobs()[-1].id, limit=120)
        finally:
            await wod.stop()
    finally:
        box.close()

    assert job.state is JobState.DONE, job.reason
    assert appliance.password_ok("student2", job.result["password"])
    calls = [(hook["name"], hook["ok"]) for hook in job.result["hooks"]
             if hook["name"].startswith("appliance ")]
    failed = (f"appliance {appliance.address}: sudo chpasswd", False)
    assert calls[0] == failed
    assert calls[-2:] == [(f"appliance {appliance.address}: sudo chpasswd", True),
                          (f"appliance {appliance.address}: hostname", True)]
    assert set(calls[:-2]) == {failed}
    assert "cannot connect: Connection refused" in job.result["hooks"][0]["output"]


def _retrying(wod: Backend2E) -> bool:
    jobs = wod.jobs()
    step = jobs[-1].to_public()["current_step"] if jobs else None
    return bool(step and step["name"] == "hooks create" and step["try"] >= 2)


def _backend(tmp_path: Path, appliance, key: KeyPair) -> tuple[Sandbox, Path]:
    """A sandbox whose sample workshop has `appliance`, and a config file for it with the
    handler module above."""
    box = make_sandbox(tmp_path / "box", students=range(1, 6), base_id=100,
                       workshop_fields={"monoappliance": True})
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "sample101.py").write_text(textwrap.dedent(HANDLER))
    data = box.config_data()
    data["handlers"] = {"private": str(handlers)}
    data["vars"] = {f"IP-{WS}": appliance.address}
    data["appliances"] = appliance_settings(appliance, key)
    config_file = tmp_path / "wodmail.yml"
    config_file.write_text(yaml.safe_dump(data))
    return box, config_file


async def test_a_reload_keeps_the_appliance_connections_unless_their_settings_change(
        tmp_path: Path) -> None:
    def config(**appliances):
        return parse_config({"state_dir": str(tmp_path / "state"),
                             "appliances": {"user": "wodadmin", **appliances}}, "test")

    runner = LifecycleRunner(Backend.from_config(config()))
    try:
        pool = runner.backend.appliances
        runner.reconfigure(config())
        assert runner.backend.appliances is pool
        runner.reconfigure(config(max_channels=3))
        assert runner.backend.appliances is not pool
        assert runner.backend.appliances.settings.max_channels == 3
    finally:
        await runner.aclose()
