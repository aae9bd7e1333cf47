"""The daemon under a service manager: notify messages, SIGHUP reloads, SIGTERM stops.

Each test runs the real `wodmail serve` as a subprocess with NOTIFY_SOCKET pointing at a
datagram socket of the test (as systemd's), and sends it real signals.
"""

from __future__ import annotations

import json
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from support.served import Served
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox
from wodmail.dev.standins.mail_clients import netcat_bytes, send_smtplib
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader

WS = "WKSHP-API101"


def _config(tmp_path: Path, notebooks: Path, **extra: Any) -> dict[str, Any]:
    return {
        "listen": {"host": "127.0.0.1", "port": 0},
        "status": {"listen": None},
        "state_dir": str(tmp_path / "state"),
        "students_dir": str(tmp_path / "students"),
        "notebooks": {"public": str(notebooks)},
        **extra,
    }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(config: dict[str, Any], **env: Any) -> Served:
        served = Served(tmp_path, config, **env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def _events(served: Served) -> list[dict[str, Any]]:
    lines = []
    for line in served.log().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    return lines


def _order(smtp: smtplib.SMTP, sender: str, student: int) -> tuple[int, str]:
    message = EmailMessage()
    message["From"] = sender
    message["Subject"] = f"CREATE {student} {student} p{student}@example.com"
    message.set_content(WS)
    smtp.mail(sender)
    smtp.rcpt("wodadmin@backend.example.org")
    code, reply = smtp.data(message.as_bytes())
    return code, reply.decode()


def test_notify_messages_in_order(tmp_path, notebooks, serve):
    served = serve(_config(tmp_path, notebooks), WATCHDOG_USEC="400000")
    served.wait_ready()
    # READY=1 came once the port was bound: a connection succeeds straight away.
    socket.create_connection(("127.0.0.1", served.port), timeout=10).close()
    served.notify.wait_for("WATCHDOG")
    served.signal(signal.SIGHUP)
    served.notify.wait_for("RELOADING")
    served.notify.wait_for("READY")
    served.signal(signal.SIGTERM)
    served.notify.wait_for("STOPPING")
    assert served.wait_exit() == 0

    seen = served.notify.seen
    states = [key for message in seen for key in ("READY", "RELOADING", "STOPPING")
              if key in message]
    assert states == ["READY", "RELOADING", "READY", "STOPPING"]
    first_watchdog = next(i for i, m in enumerate(seen) if "WATCHDOG" in m)
    assert first_watchdog > next(i for i, m in enumerate(seen) if "READY" in m)
    assert seen[0].get("STATUS") == "recovering the journal"  # STATUS before READY
    events = [event["event"] for event in _events(served)]
    assert "signal received: reloading the configuration" in events
    assert "configuration reloaded" in events
    assert "signal received: stopping" in events


def test_sighup_changes_the_allow_list_while_a_client_stays_connected(
    tmp_path, notebooks, serve
):
    config = _config(tmp_path, notebooks, allowed_senders=["old@example.org"])
    served = serve(config)
    served.wait_ready()
    with smtplib.SMTP("127.0.0.1", served.port, timeout=30) as smtp:
        smtp.ehlo("client.example.org")
        assert _order(smtp, "old@example.org", 1)[0] == 250

        served.write_config({**config, "allowed_senders": ["new@example.org"]})
        served.signal(signal.SIGHUP)
        served.notify.wait_for("RELOADING")
        served.notify.wait_for("READY")
        code, reply = _order(smtp, "old@example.org", 2)
        assert code == 550 and "sender not allowed: old@example.org" in reply
        assert _order(smtp, "new@example.org", 3)[0] == 250

        # A broken file is refused, with its reason on one line; the running config stays.
        served.write_config("allowed_senders: [unclosed\n")
        served.signal(signal.SIGHUP)
        served.notify.wait_for("RELOADING")
        served.notify.wait_for("READY")
        assert _order(smtp, "new@example.org", 4)[0] == 250
        assert _order(smtp, "old@example.org", 5)[0] == 550
    refused = [e for e in _events(served) if e["event"].startswith("configuration not reloaded")]
    assert len(refused) == 1
    assert refused[0]["reason"].startswith(f"{served.config_path}: not valid YAML")
    assert "\n" not in refused[0]["reason"]
    served.signal(signal.SIGTERM)
    assert served.wait_exit() == 0


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = make_sandbox(tmp_path / "sandbox", students=range(1, 21))
    yield box
    box.close()


def test_sigterm_during_a_burst_exits_within_the_grace_and_loses_nothing(
    tmp_path, sandbox, serve
):
    config = sandbox.config_data()
    config["portal"]["timeout_seconds"] = 600
    config["dispatch"].update(concurrency=4, stop_grace_seconds=1, retry_deadline_seconds=900)
    # The portal answers nothing for 10 minutes: without a bounded grace, stopping would wait
    # that long (the test's limit for the exit is far below it).
    sandbox.portal.set_delay(600)
    served = serve(config)
    served.wait_ready()
    acked: dict[int, int] = {}
    enough = threading.Event()

    def send(student: int) -> None:
        try:
            code, reply = send_smtplib("127.0.0.1", served.port,
                                       f"CREATE {student} {student} p{student}@example.com",
                                       SAMPLE_WORKSHOP)
        except (OSError, smtplib.SMTPException):
            return  # cut off by the stop: never acknowledged, so the sender knows
        if code == 250:
            acked[student] = int(reply.decode().rsplit(" ", 1)[1])
            if len(acked) >= 5:
                enough.set()

    with ThreadPoolExecutor(8) as pool:
        for student in sandbox.students:
            pool.submit(send, student)
        assert enough.wait(60), served.log()
        served.signal(signal.SIGTERM)
    assert served.wait_exit(limit=120) == 0
    events = [event["event"] for event in _events(served)]
    assert "order interrupted; it will run again on the next start" in events

    journal = JournalReader(tmp_path / "sandbox" / "state" / "journal.sqlite3")
    for student, job_id in acked.items():
        job = journal.get(job_id)
        assert job is not None and job.student == student
        assert job.state in (JobState.ACCEPTED, JobState.RUNNING)

    # The next start runs every acknowledged order to its end.
    sandbox.portal.set_delay(0)
    again = serve(config)
    again.wait_ready()
    waiting = set(acked.values())
    limit = time.monotonic() + 120
    while waiting and time.monotonic() < limit:
        time.sleep(0.1)
        waiting = {job_id for job_id in waiting if not journal.get(job_id).state.finished}
    for job_id in acked.values():
        job = journal.get(job_id)
        assert job.state is JobState.DONE, (job.reason, again.log()[-3000:])
    again.signal(signal.SIGTERM)
    assert again.wait_exit() == 0


def test_socket_activation_serves_a_connection_made_before_wodmail_started(
    tmp_path, notebooks, serve
):
    # The test holds the port as systemd's wodmail.socket would: a client connects and sends
    # its order while no wodmail runs at all (as during a restart).
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=60)
        client.sendall(netcat_bytes("CREATE 1 1 p1@example.com", WS))
        served = serve(_config(tmp_path, notebooks), inherit=listener)
        served.wait_ready()
        assert served.port == port  # listen.port (0) is not used: the inherited socket is
        replies = b""
        while chunk := client.recv(4096):
            replies += chunk
        client.close()
        assert b"250 2.0.0 OK job 1" in replies
        served.signal(signal.SIGTERM)
        assert served.wait_exit() == 0
        # The socket outlives the daemon: the next start takes it over again.
        again = serve(_config(tmp_path, notebooks), inherit=listener)
        again.wait_ready()
        code, reply = send_smtplib("127.0.0.1", port, "CREATE 2 2 p2@example.com", WS)
        assert code == 250
        again.signal(signal.SIGTERM)
        assert again.wait_exit() == 0
    events = [event for event in _events(again) if event["event"] == "wodmail listening"]
    assert events[-1]["inherited"] is True


def _backlog(port: int) -> int:
    """The listening socket's backlog as the kernel holds it: `ss -ltn`'s Send-Q."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()
    assert out, f"no listener on port {port}"
    return int(out[2])  # State Recv-Q Send-Q ...


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
def test_socket_activation_keeps_the_socket_units_backlog(tmp_path, notebooks, serve):
    # wodmail.socket's Backlog=1024: systemd listens with it, and asyncio listens again on the
    # socket it is given. A restart during a portal burst must still find 1024 places.
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as listener:
        port = listener.getsockname()[1]
        assert _backlog(port) == 1024
        served = serve(_config(tmp_path, notebooks), inherit=listener)
        served.wait_ready()
        assert _backlog(port) == 1024
        served.signal(signal.SIGTERM)
        assert served.wait_exit() == 0
        # The socket outlives the daemon, with the backlog it had.
        assert _backlog(port) == 1024


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
def test_listen_backlog_sets_the_backlog_of_wodmails_own_socket(tmp_path, notebooks, serve):
    served = serve(_config(tmp_path, notebooks, listen={"host": "127.0.0.1", "port": 0,
                                                         "backlog": 2000}))
    served.wait_ready()
    assert _backlog(served.port) == 2000
    served.signal(signal.SIGTERM)
    assert served.wait_exit() == 0


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _health(port: int) -> dict[str, Any]:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).json()


def _wait_generation(port: int, wanted: int, reloads: int, last: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (config := _health(port)["config"]) != {"generation": wanted, "reloads": reloads,
                                                   "last_reload": last}:
        assert time.monotonic() < deadline, config
        time.sleep(0.1)
    return config


def test_healthz_shows_when_a_reload_has_been_applied(tmp_path, notebooks, serve):
    # `systemctl reload` on systemd 252 may return before wodmail applied the config: an
    # admin follows it with /healthz, whose config generation grows once the reload is done.
    status_port = _free_port()
    config = _config(tmp_path, notebooks, status={"listen": f"127.0.0.1:{status_port}"})
    served = serve(config)
    served.wait_ready()
    assert _health(status_port)["config"] == {"generation": 1, "reloads": 0,
                                                   "last_reload": None}
    served.write_config({**config, "allowed_senders": ["portal@example.org"]})
    served.signal(signal.SIGHUP)
    _wait_generation(status_port, 2, 1, "applied")
    # The new allow-list is in force once the generation says so.
    code, _reply = send_smtplib("127.0.0.1", served.port, "CREATE 1 1 p1@example.com", WS,
                                sender="other@example.org")
    assert code != 250
    # A config that does not load leaves the generation, and says the reload was refused.
    served.write_config("listen: [not, a, mapping]\n")
    served.signal(signal.SIGHUP)
    _wait_generation(status_port, 2, 2, "refused")
    served.signal(signal.SIGTERM)
    assert served.wait_exit() == 0
