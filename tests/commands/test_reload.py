"""`wodmail reload [--wait]`: the real command against a real `wodmail serve`.

`systemctl reload` on systemd 252 returns before the daemon has applied its config; `reload
--wait` returns once `/healthz` says the reload finished, so what follows it sees the new
config, and says when the daemon refused it or never answered.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.served import Served
from wodmail.dev.standins.mail_clients import send_smtplib

WS = "WKSHP-API101"
LIMIT = 60.0


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@pytest.fixture
def base(tmp_path: Path, notebooks: Path) -> dict[str, Any]:
    return {
        "listen": {"host": "127.0.0.1", "port": 0},
        "status": {"listen": f"127.0.0.1:{_free_port()}"},
        "state_dir": str(tmp_path / "state"),
        "students_dir": str(tmp_path / "students"),
        "notebooks": {"public": str(notebooks)},
    }


@pytest.fixture
def served(tmp_path: Path, base: dict[str, Any]) -> Iterator[Served]:
    daemon = Served(tmp_path, base)
    daemon.wait_ready()
    yield daemon
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGCONT)  # a test may have stopped it
    daemon.close()


def _reload(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wodmail", "reload", "--config", str(config), *args],
        capture_output=True, text=True, timeout=LIMIT * 2, check=False,
    )


def _health(served: Served, base: dict[str, Any]) -> dict[str, Any]:
    import httpx

    url = f"http://{base['status']['listen']}/healthz"
    return dict(httpx.get(url, timeout=30).json()["config"])


def _wait_reloads(served: Served, base: dict[str, Any], reloads: int) -> dict[str, Any]:
    deadline = time.monotonic() + LIMIT
    while (config := _health(served, base))["reloads"] < reloads:
        assert time.monotonic() < deadline, config
        time.sleep(0.1)
    return config


def test_reload_wait_returns_once_the_new_config_is_in_force(served, base):
    served.write_config({**base, "allowed_senders": ["portal@example.org"]})
    done = _reload(served.config_path, "--wait")
    assert done.returncode == 0, done.stderr
    assert "configuration reloaded: generation 2 (was 1)" in done.stdout
    # Right after the command, with no wait of our own: the new allow-list holds.
    code, _reply = send_smtplib("127.0.0.1", served.port, "CREATE 1 1 p1@example.com", WS,
                                sender="other@example.org")
    assert code != 250, code
    code, _reply = send_smtplib("127.0.0.1", served.port, "CREATE 1 1 p1@example.com", WS,
                                sender="portal@example.org")
    assert code == 250


def test_reload_without_wait_sends_sighup_and_returns(served, base):
    done = _reload(served.config_path)
    assert done.returncode == 0, done.stderr
    assert f"SIGHUP sent to wodmail (pid {served.proc.pid})" in done.stdout
    assert _wait_reloads(served, base, 1)["generation"] == 2


def test_a_config_the_daemon_refuses_is_reported(served, base, tmp_path):
    # The admin's copy loads (it finds the daemon), the daemon's own file does not.
    admin_copy = tmp_path / "admin.yml"
    admin_copy.write_text(yaml.safe_dump(base))
    served.write_config("listen: [not, a, mapping]\n")
    done = _reload(admin_copy, "--wait")
    assert done.returncode == 1
    assert "refused the configuration; the running one stays (generation 1)" in done.stderr
    assert "configuration not reloaded" in done.stderr  # how to find the reason in the log
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    refusal = [json.loads(line) for line in served.log().splitlines()
               if "configuration not reloaded" in line]
    assert refusal and "listen" in refusal[-1]["reason"]


def test_a_config_that_does_not_load_is_not_sent(served, base):
    served.write_config("listen: [not, a, mapping]\n")
    done = _reload(served.config_path, "--wait")
    assert done.returncode == 1
    assert "listen" in done.stderr and "no SIGHUP sent" in done.stderr, done.stderr
    assert _health(served, base)["reloads"] == 0


def test_reload_wait_gives_up_after_its_timeout(served, base, tmp_path):
    # A reload that takes long: the daemon's new config reads an installation whose wod.sh
    # takes 10 s to source (the admin's copy has none). /healthz answers meanwhile.
    slow = tmp_path / "wod.sh"
    slow.write_text("sleep 10\n")
    admin_copy = tmp_path / "admin.yml"
    admin_copy.write_text(yaml.safe_dump(base))
    served.write_config({**base, "installation": {"wod_sh": str(slow)}})
    done = _reload(admin_copy, "--wait", "--timeout", "2")
    assert done.returncode == 1
    assert "no reload finished within 2 s (/healthz still says generation 1, 0 reloads)" \
        in done.stderr, done.stderr
    # The signal was delivered all the same: the reload ends later (refused: the stand-in
    # wod.sh defines nothing).
    assert _wait_reloads(served, base, 1)["last_reload"] == "refused"


def test_a_wedged_daemon_is_not_signalled(served, base):
    served.proc.send_signal(signal.SIGSTOP)  # holds the journal, answers nothing
    try:
        done = _reload(served.config_path, "--wait", "--timeout", "2")
    finally:
        served.proc.send_signal(signal.SIGCONT)
    assert done.returncode == 1
    assert "no answer from the status listener" in done.stderr, done.stderr
    assert "no SIGHUP sent" in done.stderr
    assert _health(served, base)["reloads"] == 0


def test_reload_wait_needs_the_status_listener(served, base, tmp_path):
    no_status = tmp_path / "no-status.yml"
    no_status.write_text(yaml.safe_dump({**base, "status": {"listen": None}}))
    done = _reload(no_status, "--wait")
    assert done.returncode == 1
    assert "status.listen is off" in done.stderr, done.stderr
    assert _health(served, base)["reloads"] == 0  # nothing sent


def test_reload_with_no_daemon_says_so(tmp_path, base):
    config = tmp_path / "idle.yml"
    config.write_text(yaml.safe_dump(base))
    done = _reload(config, "--wait")
    assert done.returncode == 1
    assert "no running wodmail holds the journal" in done.stderr, done.stderr
