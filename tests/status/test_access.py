"""Who may ask the status listener: the Host header (DNS rebinding) and the bearer token of
`status.token_file`. A real daemon answers over loopback HTTP; chromium, when installed,
plays the student's browser on the backend."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from support.status_http import get, refusals, status_code, status_port
from wodmail.errors import ConfigurationError
from wodmail.journal.store import Arrival
from wodmail.service import Daemon


def _status(**settings: object) -> dict[str, object]:
    return {"listen": "127.0.0.1:0", **settings}


def _token_file(folder: Path, token: str, mode: int = 0o600) -> Path:
    path = folder / "status.token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


async def test_only_the_hosts_it_listens_as_are_answered(make_config, start_daemon):
    daemon = await start_daemon(make_config(status=_status(hostnames=["status.example.org"])))
    port = status_port(daemon)
    before = refusals("host")
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LocalHost.",
                 f"[::1]:{port}", "status.example.org", f"status.example.org:{port}"):
        answer = await get(port, "/jobs", f"Host: {host}")
        assert status_code(answer) == 200, (host, answer[:300])
    # A name an attacker controls (made to resolve to 127.0.0.1), or a port we are not on.
    for host in (f"rebind.attacker.example:{port}", "rebind.attacker.example",
                 f"localhost:{port + 1}", f"status.example.org:{port + 1}", "10.1.2.3"):
        answer = await get(port, "/healthz", f"Host: {host}")
        assert status_code(answer) == 421, (host, answer[:300])
        assert b"does not answer for that Host (see status.hostnames)" in answer
    assert refusals("host") - before == 5


async def test_a_missing_double_or_malformed_host_is_a_400(make_config, start_daemon):
    daemon = await start_daemon(make_config(status=_status()))
    port = status_port(daemon)
    before = refusals("host")
    no_host = await get(port, "/jobs")
    assert status_code(no_host) == 400 and b"a Host header is required" in no_host
    two = await get(port, "/jobs", "Host: localhost", "Host: rebind.attacker.example")
    assert status_code(two) == 400 and b"more than one Host header" in two
    bad = await get(port, "/jobs", "Host: http://localhost/")
    assert status_code(bad) == 400 and b"malformed Host header" in bad
    assert refusals("host") - before == 3
    # HTTP/1.0 has no Host requirement (no browser sends HTTP/1.0 without one).
    assert status_code(await get(port, "/healthz", version="HTTP/1.0")) == 200


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(scripts/system-deps.sh installs it when run as root)")
async def test_a_browser_on_the_backend_rebound_to_loopback_reads_nothing(
    make_config, start_daemon, tmp_path
):
    """DNS rebinding, as a student's page would do it: chromium resolves the attacker's name
    to 127.0.0.1 (--host-resolver-rules stands in for the attacker's DNS server)."""
    daemon = await start_daemon(make_config(status=_status()))
    port = status_port(daemon)
    assert daemon.journal is not None
    await daemon.journal.reject("not an order", Arrival(
        peer="127.0.0.1", envelope_from="jane@example.com", subject="a marker subject"))
    common = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--no-sandbox",
              f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]
    rebound = await _run(*common, "--host-resolver-rules=MAP rebind.attacker.example 127.0.0.1",
                         f"http://rebind.attacker.example:{port}/jobs")
    assert "does not answer for that Host" in rebound
    assert "marker subject" not in rebound
    direct = await _run(*common, f"http://localhost:{port}/jobs")
    assert "marker subject" in direct  # the same browser by the listener's own name is served


async def test_the_token_is_required_everywhere_but_healthz(make_config, start_daemon, tmp_path):
    token = secrets.token_hex(32)
    config = make_config(status=_status(token_file=str(_token_file(tmp_path, token))))
    daemon = await start_daemon(config)
    base = f"http://127.0.0.1:{status_port(daemon)}"
    before = refusals("token")
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        assert (await client.get("/healthz")).status_code == 200
        for path in ("/", "/jobs", "/metrics", "/nothing"):
            bare = await client.get(path)
            assert bare.status_code == 401, path
            assert bare.headers["www-authenticate"].startswith("Bearer")
            assert "bearer token is required" in bare.json()["error"]
            wrong = await client.get(path, headers={"Authorization": f"Bearer {token[:-1]}x"})
            assert wrong.status_code == 401 and wrong.json()["error"] == "wrong bearer token"
            basic = await client.get(path, auth=("admin", token))
            assert basic.status_code == 401, path
        for scheme in ("Bearer", "bearer"):
            good = {"Authorization": f"{scheme} {token}"}
            assert (await client.get("/jobs", headers=good)).json() == []
            assert (await client.get("/metrics", headers=good)).status_code == 200
            assert (await client.get("/", headers=good)).status_code == 200
            assert (await client.get("/nothing", headers=good)).status_code == 404
    assert refusals("token") - before == 12


async def test_a_token_file_others_can_read_stops_the_start(make_config, tmp_path):
    path = _token_file(tmp_path, secrets.token_hex(32), mode=0o644)
    daemon = Daemon(make_config(status=_status(token_file=str(path))), _never_runs)
    with pytest.raises(ConfigurationError) as refused:
        await daemon.start()
    assert str(refused.value) == (
        f"status.token_file {path}: readable or writable by others (mode 0644): chmod o-rwx "
        "it (0600, or 0640 for a group that must read it)")
    assert daemon.journal is None  # refused before the journal was opened


def test_serve_says_why_in_one_line_and_exits_1(tmp_path, notebooks):
    path = _token_file(tmp_path, "short", mode=0o600)
    config = tmp_path / "wodmail.yml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": 0}, "state_dir": str(tmp_path / "state"),
        "notebooks": {"public": str(notebooks)},
        "status": {"listen": "127.0.0.1:0", "token_file": str(path)}}))
    done = subprocess.run([sys.executable, "-m", "wodmail.cli", "serve", "--config",
                           str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert errors == [f"wodmail: status.token_file {path}: the token has 5 characters; use at "
                      "least 16 (e.g. openssl rand -hex 32 > FILE)"]
    assert not (tmp_path / "state" / "journal.sqlite3").exists()
    assert "short" not in done.stderr.replace(str(path), "")  # the token itself never shown
    assert all(json.loads(line) for line in done.stderr.splitlines() if line.startswith("{"))
    assert os.stat(path).st_mode & 0o777 == 0o600  # nothing changed


async def _never_runs(job, ctx):  # noqa: ANN001, ANN202
    raise AssertionError("no order runs in this test")


async def _run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return stdout.decode()
