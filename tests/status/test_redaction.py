"""What a student on the backend can read of orders through the status listener: no hook
output (a script may print a secret in a form no scrubbing recognises) and only masked
e-mail addresses; the journal, and so `wodmail show`, keeps everything.

A real daemon runs the real lifecycle on a sandbox with a real hook script; every request
is real HTTP over loopback.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import textwrap
import time
from pathlib import Path

import httpx

from support.status_http import status_port
from wodmail import cli
from wodmail.dev.sandbox import SAMPLE_WORKSHOP as WS
from wodmail.journal.jobs import JobState

# What the script prints: the hub token, reversed. Nothing registered as a secret looks so.
REVERSED = secrets.token_hex(16)[::-1]
FAILING_MARKER = "create hook gives up for student 2"


def _create_hook(folder: Path) -> None:
    folder.mkdir()
    script = folder / f"create-{WS}.sh"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(f"""\
        echo "the token, backwards: {REVERSED}"
        if [ "$stdid" = 2 ]; then echo "{FAILING_MARKER}"; exit 3; fi
    """))
    script.chmod(0o755)


async def test_hook_output_and_whole_addresses_stay_out_of_jobs_and_the_page(
    tmp_path, backend, capsys
):
    _create_hook(tmp_path / "scripts")
    wod = await backend(scripts={"private": str(tmp_path / "scripts")},
                        status={"listen": "127.0.0.1:0"})
    done = await wod.order("CREATE 1 1 jane.doe@example.com", WS)
    failed = await wod.order("CREATE 2 2 john.roe@example.org", WS)
    await wod.send("CREATE 99 99 max.moe@example.net", WS)  # refused: outside the range
    deadline = time.monotonic() + 60
    while not [job for job in wod.jobs() if job.state is JobState.REJECTED]:
        assert time.monotonic() < deadline, "the refused mail was never recorded"
        await asyncio.sleep(0.05)
    assert done.state is JobState.DONE, done.reason
    assert failed.state is JobState.FAILED and "create" in (failed.reason or "")
    assert REVERSED in json.dumps(done.result)  # the journal keeps what the hooks said
    assert FAILING_MARKER in json.dumps(failed.result)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{status_port(wod.daemon)}",
                                 timeout=60) as client:
        jobs = (await client.get("/jobs")).text
        page = (await client.get("/")).text
    for body in (jobs, page):
        assert REVERSED not in body and FAILING_MARKER not in body
        assert "jane.doe@" not in body and "john.roe@" not in body and "max.moe@" not in body
    shown = {job["id"]: job for job in json.loads(jobs)}
    assert shown[done.id]["email"] == "j***@example.com"
    assert shown[done.id]["subject"] == "CREATE 1 1 j***@example.com"
    assert shown[failed.id]["email"] == "j***@example.org"
    # The hooks are listed (which ran, as whom, ok or not), only their output is left out.
    hooks = shown[done.id]["result"]["hooks"]
    assert [hook["ok"] for hook in hooks] == [True]
    assert hooks[0]["name"].endswith(f"/create-{WS}.sh")
    assert all("output" not in hook for hook in shown[failed.id]["result"]["hooks"])
    [step] = [s for s in shown[failed.id]["result"]["steps"] if s["status"] == "failed"]
    assert "output" not in step and step["error"]
    assert "CREATE 99 99 m***@example.net" in page  # the refused mail's subject, masked

    # `wodmail show` (the journal's file permissions) still has all of it.
    config = tmp_path / "cli.json"
    config.write_text(json.dumps({"state_dir": str(wod.config.state_dir)}))
    capsys.readouterr()
    cli.main(["show", str(failed.id), "--config", str(config)])
    assert FAILING_MARKER in capsys.readouterr().out
