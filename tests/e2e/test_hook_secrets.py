"""Values a hook calls secret (a script's `WODMAIL_SECRET=` line, a handler's `ctx.secret`)
never show in `wodmail show`, as the order's password and the portal's tokens never do.

A whole order through the real daemon on the sandbox (stand-in portal and hub on loopback):
a create script declares a token and prints it as `set -x` would; a post_copy handler
declares another and fails with it in its command's output and in its error.
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import structlog
import yaml

from support.e2e import Backend2E
from wodmail import cli
from wodmail.config import parse_config
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox
from wodmail.journal.jobs import JobState
from wodmail.logs import configure_logging

WS = SAMPLE_WORKSHOP
SCRIPT_TOKEN = "script-token-5f0c9e"
HANDLER_TOKEN = "handler-token-c31d7a"

CREATE_SH = f"""\
#!/bin/sh
token={SCRIPT_TOKEN}
echo "WODMAIL_SECRET=$token" >> "$WODMAIL_VARS_FILE"
echo "APPLIANCE=ready" >> "$WODMAIL_VARS_FILE"
echo "+ curl -H x-access-token:$token https://appliance.example.org/register"
"""

HANDLER = f"""\
WORKSHOPS = ({WS!r},)


async def post_copy(ctx):
    token = ctx.secret({HANDLER_TOKEN!r})
    try:
        await ctx.run("sh", "-c", "echo appliance refused $TOKEN; exit 5", env={{"TOKEN": token}})
    finally:
        ctx.log.warning("appliance registration failed", token_used=token)
"""


async def test_declared_secrets_are_masked_in_wodmail_show(sandbox: Sandbox, tmp_path: Path,
                                                           capsys) -> None:
    scripts, handlers = tmp_path / "scripts", tmp_path / "handlers"
    scripts.mkdir()
    (scripts / f"create-{WS}.sh").write_text(CREATE_SH)
    (scripts / f"create-{WS}.sh").chmod(0o755)
    handlers.mkdir()
    (handlers / "sample101.py").write_text(textwrap.dedent(HANDLER))
    data = sandbox.config_data()
    data["scripts"]["private"] = str(scripts)
    data["handlers"] = {"private": str(handlers)}
    config_file = tmp_path / "wodmail.yml"
    config_file.write_text(yaml.safe_dump(data))

    log = io.StringIO()
    configure_logging(stream=log)  # the daemon's own logging, as `wodmail serve` sets it up
    try:
        wod = await Backend2E(sandbox, parse_config(data, str(config_file))).start()
        try:
            job = await wod.order("CREATE 4 4 p4@example.com", WS, limit=120)
        finally:
            await wod.stop()
    finally:
        structlog.reset_defaults()
    capsys.readouterr()

    assert job.state is JobState.FAILED
    assert job.reason == (f"hooks post_copy: module {handlers / 'sample101.py'}:post_copy: "
                          "command sh: exited with status 5")
    script_run, handler_run = job.result["hooks"]
    assert script_run["output"] == (
        "+ curl -H x-access-token:*** https://appliance.example.org/register\n")
    assert handler_run["output"] == "appliance refused ***\n"

    assert cli.main(["show", str(job.id), "--config", str(config_file)]) == 3
    text = capsys.readouterr().out
    assert cli.main(["show", str(job.id), "--json", "--config", str(config_file)]) == 3
    shown = capsys.readouterr().out
    for output in (text, shown):
        assert SCRIPT_TOKEN not in output and HANDLER_TOKEN not in output
    assert "| + curl -H x-access-token:*** https://appliance.example.org/register" in text
    assert "| appliance refused ***" in text
    assert json.loads(shown)["result"]["hooks"][1]["output"] == "appliance refused ***\n"
    logged = log.getvalue()
    assert '"token_used": "***"' in logged
    assert SCRIPT_TOKEN not in logged and HANDLER_TOKEN not in logged
    # A declared secret is not a template variable; the other line of the file is.
    stored = yaml.safe_load((sandbox.root / "state" / "student-vars" / "student4"
                             / f"{WS}.yml").read_text())
    assert stored == {"APPLIANCE": "ready"}
