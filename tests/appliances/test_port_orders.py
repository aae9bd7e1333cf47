"""Appliances in whole orders: a handler module sets the student's password on the
workshop's appliance during a CREATE sent over SMTP to the real daemon, each appliance call
shows in `wodmail show` with its time, and later orders reuse the daemon's connection."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from support.appliance_pool import appliance_settings
from support.appliances import ApplianceFactory, KeyPair
from support.e2e import Backend2E
from wodmail import cli
from wodmail.config import parse_config
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, make_sandbox
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
    box = make_sandbox(tmp_path / "box", students=range(1, 6), base_id=100,
                       workshop_fields={"monoappliance": True})
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "sample101.py").write_text(textwrap.dedent(HANDLER))
    data = box.config_data()
    data["handlers"] = {"private": str(handlers)}
    data["vars"] = {f"IP-{WS}": appliance.address}
    data["appliances"] = appliance_settings(appliance, admin_keypair)
    config_file = tmp_path / "wodmail.yml"
    config_file.write_text(yaml.safe_dump(data))
    config = parse_config(data, str(config_file))
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
    lines = [line.strip() for line in shown.splitlines() if "appliance " in line]
    assert lines[0].startswith(f"- module {handlers / 'sample101.py'}:create") or any(
        line.startswith(f"- appliance {appliance.address}: sudo chpasswd: ok ")
        and line.endswith(" ms") for line in lines), shown
    assert any(line.startswith(f"- appliance {appliance.address}: sudo chpasswd: ok ")
               and line.endswith(" ms") for line in lines), shown
    assert f"| {appliance.hostname}" in shown


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
