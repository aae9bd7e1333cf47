"""The status listener of a running daemon: /metrics, /healthz, /jobs and the page at /.

The daemon runs the real lifecycle on a sandboxed backend (stand-in portal and hub on
loopback); every request is real HTTP over loopback.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.e2e import Backend2E
from support.paths import REPO
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox
from wodmail.journal.jobs import JobState

WS = SAMPLE_WORKSHOP


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = make_sandbox(tmp_path / "sandbox", students=range(1, 6))
    yield box
    box.close()


@pytest.fixture
async def wod(sandbox: Sandbox) -> AsyncIterator[Backend2E]:
    running = await Backend2E(sandbox, sandbox.config(status={"listen": "127.0.0.1:0"})).start()
    yield running
    await running.stop()


def _url(wod: Backend2E, path: str) -> str:
    assert wod.daemon.status is not None
    return f"http://127.0.0.1:{wod.daemon.status.port}{path}"


async def _get(wod: Backend2E, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.get(_url(wod, path))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_move_when_orders_run(sandbox, wod):
    before = _samples((await _get(wod, "/metrics")).text)
    job = await wod.order("CREATE 2 2 p2@example.com", WS)
    assert job.state is JobState.DONE, job.reason
    response = await _get(wod, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = _samples(response.text)
    assert all(name.startswith("wodmail_") for name, _ in after)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("wodmail_orders_total", verb="CREATE", outcome="done") == 1
    assert moved("wodmail_orders_accepted_total", verb="CREATE", duplicate="no") == 1
    assert moved("wodmail_order_duration_seconds_count", verb="CREATE", outcome="done") == 1
    assert moved("wodmail_step_duration_seconds_count", verb="CREATE", step="deploy",
                 status="ok") == 1
    assert moved("wodmail_peer_request_duration_seconds_count", peer="API-DB",
                 method="PUT") >= 2  # the student's password, the customer's `active`
    assert moved("wodmail_smtp_sessions_total") >= 1
    assert ("wodmail_key_pool_keys", ()) in after
    assert _value(after, "wodmail_orders_in_flight") == 0

    # The Grafana dashboard shipped in the repository only queries metrics that exist.
    families = {family.name for family in text_string_to_metric_families(response.text)}
    dashboard = (REPO / "grafana" / "wodmail.json").read_text()
    queried = set(re.findall(r"wodmail_[a-z_]+", dashboard))
    assert queried
    for name in queried:
        assert re.sub(r"_(total|bucket)$", "", name) in families, name

    # A refusal is counted by its kind of reason.
    await wod.send("CREATE 99 99 p@example.com", WS)  # outside the students range
    refused = _samples((await _get(wod, "/metrics")).text)
    assert _value(refused, "wodmail_smtp_refusals_total", reason="order") == (
        _value(after, "wodmail_smtp_refusals_total", reason="order") + 1)


async def test_healthz_turns_unhealthy_when_the_journal_cannot_be_written(sandbox, wod):
    healthy = await _get(wod, "/healthz")
    assert healthy.status_code == 200, healthy.text
    body = healthy.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "journal": True, "smtp": True, "loop": True}

    # Another process holds the journal's write lock: no commit can go through.
    locker = sqlite3.connect(wod.config.journal_path(), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        sick = await _get(wod, "/healthz")
        assert sick.status_code == 503
        assert sick.json()["status"] == "unhealthy"
        journal = sick.json()["checks"]["journal"]
        assert journal["ok"] is False and "waited" in journal["detail"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    # Healthy again once the lock is gone (the stuck write finishes first).
    deadline = time.monotonic() + 60
    while (again := await _get(wod, "/healthz")).status_code != 200:
        assert time.monotonic() < deadline, again.text
        await asyncio.sleep(0.2)


async def test_healthz_shows_the_peers_last_result(sandbox, wod):
    await wod.order("CREATE 1 1 p1@example.com", WS)
    peers = (await _get(wod, "/healthz")).json()["peers"]
    assert peers["API-DB"]["ok"] is True
    assert peers["JupyterHub"]["ok"] is True


async def test_jobs_is_the_json_of_wodmail_jobs(sandbox, wod, tmp_path):
    shutil.rmtree(sandbox.home(4))
    failed = await wod.order("CREATE 4 4 p4@example.com", WS)
    assert failed.state is JobState.FAILED
    await wod.order("CREATE 3 3 p3@example.com", WS)
    config_path = tmp_path / "cli.json"
    config_path.write_text(json.dumps({"state_dir": str(wod.config.state_dir)}))
    for query, options in (("", []), ("?state=failed&verb=create", ["--state", "failed",
                                                                      "--verb", "CREATE"]),
                           ("?student=3&limit=1", ["--student", "3", "--limit", "1"])):
        served = (await _get(wod, f"/jobs{query}")).json()
        cli = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "wodmail.cli", "jobs", "--json", "--config", str(config_path),
             *options],
            capture_output=True, text=True, check=True,
        )
        assert served == [_as_served(job) for job in json.loads(cli.stdout)], query
    assert [job["id"] for job in (await _get(wod, "/jobs?state=failed")).json()] == [failed.id]
    bad = await _get(wod, "/jobs?state=lost")
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("state must be one of")
    assert (await _get(wod, "/nothing")).status_code == 404


def _as_served(job: dict) -> dict:
    """A job of `wodmail jobs --json` as /jobs shows it: the same fields, the participant's
    address masked (these orders ran no hook: nothing else differs)."""
    address = job["email"]
    masked = f"{address[0]}***@{address.split('@')[1]}"
    sender = job["envelope_from"]
    hidden = f"{sender[0]}***@{sender.split('@')[1]}" if sender and "@" in sender else sender
    return {**job, "email": masked, "subject": job["subject"].replace(address, masked),
            "envelope_from": hidden}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(scripts/system-deps.sh installs it when run as root)")
async def test_the_page_shows_a_failed_order_with_its_reason_in_a_browser(
    sandbox, wod, tmp_path
):
    shutil.rmtree(sandbox.home(5))
    failed = await wod.order("CREATE 5 5 p5@example.com", WS)
    assert failed.state is JobState.FAILED
    done = await wod.order("CREATE 1 1 p1@example.com", WS)
    assert done.state is JobState.DONE
    screenshot = tmp_path / "status-page.png"
    profile = tmp_path / "chromium-profile"
    # --no-sandbox: chromium's sandbox needs root's consent or user namespaces, which a
    # container may not give; the page it loads is our own, from loopback.
    common = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--no-sandbox",
              f"--user-data-dir={profile}", "--window-size=1400,700"]
    dom = await _run(*common, "--dump-dom", _url(wod, "/"))
    await _run(*common, f"--screenshot={screenshot}", _url(wod, "/"))

    row = dom.split(f'data-job="{failed.id}"', 1)[1].split("</tr>", 1)[0]
    assert ">failed<" in row
    assert "no home for student5" in row and failed.reason in row.replace("&#39;", "'")
    assert f'data-job="{done.id}"' in dom
    # The peers' last calls, as /healthz says them; reasons wrap between words only.
    peers = dom.split('id="peers"', 1)[1].split("</p>", 1)[0]
    assert "API-DB ok" in peers and "JupyterHub ok" in peers
    assert "overflow-wrap: anywhere" not in dom and "word-break: normal" in dom
    assert '<meta http-equiv="refresh"' in dom
    assert "<script" not in dom
    assert screenshot.stat().st_size > 10_000  # a rendered page, not an empty one
    print(f"screenshot: {screenshot}")


async def _run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return stdout.decode()
