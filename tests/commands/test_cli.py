"""The commands admins and their scripts use: wodmail jobs/show/render/check-config/demo and
wodmail-test, run as real processes or through their `main`."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.paths import REPO as ROOT
from wodmail import cli, testclient
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, make_sandbox
from wodmail.journal.jobs import JobState
from wodmail.journal.store import Arrival, Journal
from wodmail.orders import Mode, Order, Verb

BIN = Path(sys.executable).parent


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def journal_config(tmp_path: Path) -> Path:
    """A config whose journal holds a finished CREATE (with password) and a refusal."""
    state = tmp_path / "state"
    journal = Journal(state / "journal.sqlite3")

    async def fill() -> None:
        order = Order(verb=Verb.CREATE, student=4, customer=825, workshop="WKSHP-API101",
                      content="WKSHP-API101", mode=Mode.WKSHP)
        accepted = await journal.accept(order, Arrival(peer="127.0.0.1", envelope_from="a@b"))
        await journal.finish(accepted.job_id, JobState.DONE,
                             result={"password": "S3cret-pw", "steps": [{"name": "deploy",
                                                                        "status": "ok", "ms": 4}]})
        await journal.reject("student 42 outside 1..20",
                             Arrival(peer="127.0.0.1", envelope_from="a@b", raw=b"Subject: x\n"),
                             verb="CREATE")

    asyncio.run(fill())
    journal.close()
    return write_config(tmp_path / "wodmail.yml", {"state_dir": str(state)})


def test_jobs_json_is_the_promised_shape(journal_config: Path, capsys):
    assert cli.main(["jobs", "--json", "--config", str(journal_config)]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [job["id"] for job in jobs] == [2, 1]
    for key in ("id", "state", "verb", "student", "customer", "workshop", "reason",
                "received_at", "finished_at"):
        assert all(key in job for job in jobs)
    rejected, created = jobs
    assert (rejected["state"], rejected["reason"], rejected["student"]) == (
        "rejected", "student 42 outside 1..20", None)
    assert (created["state"], created["student"], created["customer"]) == ("done", 4, 825)
    assert created["result"]["password"] == "***"


def test_jobs_filters(journal_config: Path, capsys):
    cli.main(["jobs", "--json", "--state", "rejected", "--config", str(journal_config)])
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == [2]
    # The README's word for them is accepted too; the JSON keeps the stable value.
    cli.main(["jobs", "--json", "--state", "refused", "--config", str(journal_config)])
    [refused] = json.loads(capsys.readouterr().out)
    assert (refused["id"], refused["state"]) == (2, "rejected")
    with pytest.raises(SystemExit):
        cli.main(["jobs", "--state", "lost", "--config", str(journal_config)])
    assert "'lost' is not a state" in capsys.readouterr().err
    cli.main(["jobs", "--json", "--student", "4", "--config", str(journal_config)])
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == [1]


async def test_a_refused_order_is_found_by_its_student_and_workshop(
    make_config, start_daemon, tmp_path, capsys
):
    from wodmail.dev.standins.mail_clients import send_portal_style_async

    config = make_config(students={"min": 1, "max": 20})
    daemon = await start_daemon(config)
    # Out of range: refused, but recorded with the student and workshop it named.
    await send_portal_style_async("127.0.0.1", daemon.port, "CREATE 121 0", "WKSHP-API101")
    path = write_config(tmp_path / "c.yml", {"state_dir": str(config.state_dir)})

    def listed(*argv: str) -> list[dict]:
        capsys.readouterr()
        assert cli.main(["jobs", "--json", *argv, "--config", str(path)]) == 0
        return json.loads(capsys.readouterr().out)

    for _ in range(600):  # the portal does not wait for the reply: wait for the record
        if listed():
            break
        await asyncio.sleep(0.1)
    [refused] = listed("--student", "121")
    assert (refused["state"], refused["workshop"]) == ("rejected", "WKSHP-API101")
    assert "121" in refused["reason"]
    assert [job["id"] for job in listed("--workshop", "WKSHP-API101")] == [refused["id"]]


def test_show_json_includes_the_password(journal_config: Path, capsys):
    assert cli.main(["show", "1", "--json", "--config", str(journal_config)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["result"]["password"] == "S3cret-pw"
    assert cli.main(["show", "1", "--config", str(journal_config)]) == 0
    text = capsys.readouterr().out
    assert "job 1: done" in text and "- deploy: ok 4 ms" in text


def test_show_raw_says_how_much_of_a_large_mail_was_not_kept(tmp_path: Path, capsys):
    state = tmp_path / "state"
    journal = Journal(state / "journal.sqlite3")
    mail = b"Subject: CREATE 42 825\n\n" + b"".join(b"line %05d\n" % n for n in range(4000))

    async def fill() -> None:
        await journal.reject("student 42 outside 1..20", Arrival("127.0.0.1", "a@b", raw=mail))
        await journal.reject("student 43 outside 1..20", Arrival("127.0.0.1", "a@b", raw=b"x\n"))

    asyncio.run(fill())
    journal.close()
    config = write_config(tmp_path / "wodmail.yml", {"state_dir": str(state)})
    omitted = len(mail) - 16384

    assert cli.main(["show", "1", "--raw", "--json", "--config", str(config)]) == 3
    shown = json.loads(capsys.readouterr().out)
    assert shown["raw"] == mail[:16384].decode() and shown["raw_omitted"] == omitted
    assert cli.main(["show", "1", "--raw", "--config", str(config)]) == 3
    text = capsys.readouterr().out
    assert (f"  raw mail (its first 16384 bytes: the {omitted} bytes after them were received"
            " but not kept):\n    | Subject: CREATE 42 825\n") in text
    assert text.rstrip().endswith(mail[:16384].decode().splitlines()[-1])
    assert cli.main(["show", "2", "--raw", "--config", str(config)]) == 3
    assert "  raw mail:\n    | x\n" in capsys.readouterr().out


def test_show_unknown_job_and_missing_journal(journal_config: Path, tmp_path: Path, capsys):
    assert cli.main(["show", "99", "--config", str(journal_config)]) == 1
    assert "no job 99" in capsys.readouterr().err
    empty = write_config(tmp_path / "empty.yml", {"state_dir": str(tmp_path / "nothing")})
    assert cli.main(["jobs", "--config", str(empty)]) == 1
    assert "no journal at" in capsys.readouterr().err


def test_bad_config_names_the_key(tmp_path: Path, capsys):
    bad = write_config(tmp_path / "bad.yml", {"students": {"max": "many"}})
    assert cli.main(["check-config", "--config", str(bad)]) == 1
    assert "bad.yml: students.max" in capsys.readouterr().err


def test_example_config_is_valid(capsys):
    from wodmail.config import load_config

    config = load_config(ROOT / "templates" / "wodmail.example.yml")
    assert config.students.max == 200
    assert config.allowed_senders == ["wod-portal@example.org"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["PURGE", "WKSHP-API101", "3,5"], "PURGE takes one student, not a range"),
        (["CREATE", "WKSHP-API101", "5,3"], "MIN (5) is greater than MAX (3)"),
        (["DESTROY", "WKSHP-API101", "3"], "VERB must be one of CREATE, CLEANUP, RESET, PURGE"),
        (["CREATE", "WKSHP-API101", "x"], "student range must be MIN or MIN,MAX"),
    ],
)
def test_wodmail_test_usage_errors(argv, message, capsys):
    assert testclient.main(argv) == 2
    assert message in capsys.readouterr().err


def test_wodmail_test_range_rules():
    assert testclient.plan_mails("CREATE", "WKSHP-X", 3, 5) == [
        ("CREATE 3 0", "WKSHP-X"), ("CREATE 4 0", "WKSHP-X"), ("CREATE 5 0", "WKSHP-X")]
    assert testclient.plan_mails("RESET", "WKSHP-X", 1, 6) == [("RESET 1,6 0", "WKSHP-X")]
    assert testclient.plan_mails("PURGE", "WKSHP-X", 2, 2) == [("PURGE 2 0", "WKSHP-X")]


def test_wodmail_test_cannot_reach_the_daemon(tmp_path: Path, capsys):
    config = write_config(tmp_path / "c.yml", {"listen": {"port": 1}})
    assert testclient.main(["CREATE", "WKSHP-API101", "3", "--config", str(config)]) == 1
    assert "cannot send to the daemon" in capsys.readouterr().err


def test_render_writes_what_a_create_would(tmp_path: Path):
    box = make_sandbox(tmp_path / "box", students=range(1, 4))
    config = write_config(tmp_path / "c.yml", box.config_data())
    box.close()  # render asks no peer: the stand-ins are gone
    out = tmp_path / "out"
    result = subprocess.run(
        [BIN / "wodmail", "render", SAMPLE_WORKSHOP, "--student", "2", "--out", str(out),
         "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "5 files written" in result.stdout
    assert "student2" in (out / "0-ReadMeFirst.ipynb").read_text()
    assert (out / ".ipynb_checkpoints" / "0-ReadMeFirst-checkpoint.ipynb").exists()
    assert not any(box.home(2).iterdir()), "render touches no home"


def test_render_lists_every_problem(tmp_path: Path):
    box = make_sandbox(tmp_path / "box", students=range(1, 4))
    config = write_config(tmp_path / "c.yml", box.config_data())
    box.close()
    (box.notebooks / SAMPLE_WORKSHOP / "2-Bad.ipynb").write_text(
        '{"a": "{{ FIRST_MISSING }}", "b": "{{ SECOND_MISSING }}"}\n')
    (box.notebooks / SAMPLE_WORKSHOP / "arr.sh").write_text('echo ${#arr[@]}\n')
    result = subprocess.run(
        [BIN / "wodmail", "render", SAMPLE_WORKSHOP, "--student", "1", "--config", str(config)],
        capture_output=True, text=True)
    assert result.returncode == 1
    assert "FIRST_MISSING" in result.stderr and "SECOND_MISSING" in result.stderr
    assert "arr.sh" in result.stderr and "Missing end of comment tag" in result.stderr
    assert "3 problem(s); nothing written" in result.stderr


def test_readme_demo_command_runs():
    result = subprocess.run([BIN / "wodmail", "demo"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "job 1: done" in out and "job 2: done" in out
    assert "PUT /api/student/101" in out
    assert "POST /hub/api/users/student1/server -> 201" in out
    assert "# demo succeeded" in out


def test_serve_says_clearly_when_the_port_is_taken(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "c.yml", {"listen": {"port": port},
                                                  "state_dir": str(tmp_path / "state")})
        result = subprocess.run([BIN / "wodmail", "serve", "--config", str(config)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
