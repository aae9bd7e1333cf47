"""What an admin meets at the shell: help, option order, pipes, exit codes, one-line errors,
and what `show` says (and does not say) about passwords."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wodmail import cli, testclient
from wodmail.config import parse_config
from wodmail.dev.demo import demo_config_data
from wodmail.dev.sandbox import make_sandbox
from wodmail.journal.jobs import JobState
from wodmail.journal.store import Arrival, Journal
from wodmail.orders import Mode, Order, Verb

BIN = Path(sys.executable).parent
WS = "WKSHP-API101"


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def order(student: int, verb: Verb = Verb.CREATE) -> Order:
    return Order(verb=verb, student=student, customer=825, workshop=WS, content=WS,
                 mode=Mode.WKSHP)


FAILED_BEFORE_PASSWORD = {"password": "Never-Set-1", "steps": [
    {"name": "workshop", "status": "ok", "ms": 2},
    {"name": "home student3", "status": "failed", "ms": 1, "error": "no home"}]}
FAILED_AFTER_PASSWORD = {"password": "Was-Set-22", "steps": [
    {"name": "set-password student4", "status": "ok", "ms": 9},
    {"name": "deploy", "status": "failed", "ms": 1, "error": "disk full"}]}
CLEANED = {"password": "Rotated-333", "steps": [
    {"name": "set-password student5", "status": "ok", "ms": 9},
    {"name": "hub stop", "status": "skipped", "why": "no hub configured"}]}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A journal with: 1 failed CREATE (password never set), 2 failed CREATE (password set),
    3 done CLEANUP, 4 queued CREATE, then 300 refusals (enough output to fill a pipe)."""
    state = tmp_path / "state"
    journal = Journal(state / "journal.sqlite3")

    async def fill() -> None:
        arrival = Arrival(peer="127.0.0.1", envelope_from="a@b")
        for student, result in ((3, FAILED_BEFORE_PASSWORD), (4, FAILED_AFTER_PASSWORD)):
            job = (await journal.accept(order(student), arrival)).job_id
            await journal.mark_running(job)
            await journal.finish(job, JobState.FAILED, result=result, reason="x: y")
        job = (await journal.accept(order(5, Verb.CLEANUP), arrival)).job_id
        await journal.finish(job, JobState.DONE, result=CLEANED)
        await journal.accept(order(6), arrival)
        for n in range(300):
            await journal.reject(f"refusal number {n}", arrival)

    asyncio.run(fill())
    journal.close()
    return write_config(tmp_path / "wodmail.yml", {"state_dir": str(state)})


def test_top_level_help_lists_every_command_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert f"    {command}" in out, command
    assert "exit codes:" in out and "141" in out and "show: the order failed" in out


def test_every_option_of_every_command_has_help_text():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("wodmail", parser), *subparsers.choices.items(),
                      ("wodmail-test", testclient.build_parser())]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


@pytest.mark.parametrize("argv", [
    ["--config", "{c}", "jobs"],
    ["-v", "jobs", "--config", "{c}"],
    ["jobs", "-v", "-c", "{c}"],
    ["-c", "{c}", "jobs", "-v", "--limit", "1"],
])
def test_config_and_verbose_go_before_or_after_the_command(argv, config_path, capsys):
    assert cli.main([a.format(c=config_path) for a in argv]) == 0
    assert "refusal number 299" in capsys.readouterr().out


def test_show_exit_code_is_the_order_state(config_path, capsys):
    codes = {job: cli.main(["show", str(job), "-c", str(config_path)]) for job in (1, 3, 4, 5)}
    assert codes == {1: 3, 3: 0, 4: 4, 5: 3}  # failed, done, queued, refused


def test_show_never_prints_a_password_that_was_not_handed_out(config_path, capsys):
    cli.main(["show", "1", "-c", str(config_path)])
    text = capsys.readouterr().out
    assert "Never-Set-1" not in text
    assert "none applied (the order stopped before the password was set)" in text
    cli.main(["show", "2", "-c", str(config_path)])
    assert "Was-Set-22 (applied before the order stopped)" in capsys.readouterr().out
    cli.main(["show", "3", "-c", str(config_path)])
    text = capsys.readouterr().out
    assert "Rotated-333" not in text
    assert "changed to a new random one to lock the participant out" in text
    assert "- hub stop: skipped (no hub configured)" in text
    cli.main(["show", "3", "--json", "-c", str(config_path)])  # the JSON keeps everything
    assert json.loads(capsys.readouterr().out)["result"]["password"] == "Rotated-333"


@pytest.mark.parametrize("command", ["jobs --json", "jobs", "show 1 --json --raw"])
def test_a_closed_pipe_ends_quietly(command, config_path):
    done = subprocess.run(
        ["bash", "-c", f'"{BIN}/wodmail" {command} -c "{config_path}" | head -c 1 >/dev/null;'
                       ' echo "${PIPESTATUS[0]}" >&2'],
        capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert lines[-1] in ("0", "3", "141")  # 141 when the pipe closed while it still wrote


def test_the_pipe_case_really_breaks_the_pipe(config_path):
    done = subprocess.run(
        ["bash", "-c", f'"{BIN}/wodmail" jobs --json -c "{config_path}" | head -c 1 >/dev/null;'
                       ' echo "${PIPESTATUS[0]}"'],
        capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "141" and done.stderr == ""


def test_config_errors_are_one_line_each_and_exit_1(tmp_path, capsys):
    broken = tmp_path / "broken.yml"
    broken.write_text("students: [1\n")
    assert cli.main(["check-config", "-c", str(broken)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"wodmail: {broken}: not valid YAML")
    bad = write_config(tmp_path / "bad.yml", {"students": {"max": "x", "min": "y"}})
    assert cli.main(["jobs", "-c", str(bad)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"wodmail: {bad}: students.m")
                                   for line in lines)


def test_wodmail_test_sends_as_the_sender_the_daemon_allows(tmp_path):
    vars_file = tmp_path / "all.yml"
    vars_file.write_text("WODSENDER: wod-portal@example.org\n")
    config = parse_config({"group_vars": [str(vars_file)]})
    assert testclient.default_sender(config) == "wod-portal@example.org"
    config = parse_config({"allowed_senders": ["Admin@Example.org", "b@c"],
                           "group_vars": [str(vars_file)]})
    assert testclient.default_sender(config) == "admin@example.org"
    assert testclient.default_sender(parse_config({})) == "wodmail-test@localhost"


async def test_wodmail_test_is_accepted_by_a_daemon_with_wodsender_only(
    make_config, start_daemon, tmp_path
):
    vars_file = tmp_path / "all.yml"
    vars_file.write_text("WODSENDER: wod-portal@example.org\n")
    config = make_config(group_vars=[str(vars_file)])
    daemon = await start_daemon(config)
    path = write_config(tmp_path / "c.yml", {"state_dir": str(config.state_dir),
                                             "group_vars": [str(vars_file)],
                                             "listen": {"port": daemon.port}})
    code = await asyncio.to_thread(
        testclient.main, ["CREATE", WS, "3", "--wait", "--timeout", "60", "-c", str(path)])
    assert code == 0


def test_wodmail_test_addresses_the_installations_order_mailbox(tmp_path):
    vars_file = tmp_path / "all.yml"
    vars_file.write_text("WODUSER: wodops\nWODBEFQDN: backend.example.org\n")
    config = parse_config({"group_vars": [str(vars_file)]})
    assert testclient.default_recipient(config) == "wodops@backend.example.org"
    assert testclient.default_recipient(parse_config({})).endswith("@localhost")


async def test_wodmail_test_orders_are_orders_on_a_backend_that_relays(
    make_config, start_daemon, tmp_path
):
    # With a relay, mail to anyone but the order mailbox is passed on: with the mailbox set
    # to the backend's name, wodmail-test's old hard-coded wodadmin@localhost was relayed.
    vars_file = tmp_path / "all.yml"
    vars_file.write_text("WODSENDER: wod-portal@example.org\nWODUSER: wodops\n"
                         "WODBEFQDN: backend.example.org\n")
    relay = {"host": "127.0.0.1", "port": 1,  # nothing listens: relayed mail would wait
             "order_recipients": ["@backend.example.org"]}
    config = make_config(group_vars=[str(vars_file)], relay=relay)
    daemon = await start_daemon(config)
    path = write_config(tmp_path / "c.yml", {"state_dir": str(config.state_dir),
                                             "group_vars": [str(vars_file)], "relay": relay,
                                             "listen": {"port": daemon.port}})
    code = await asyncio.to_thread(
        testclient.main, ["CREATE", WS, "3", "--wait", "--timeout", "60", "-c", str(path)])
    assert code == 0


def test_demo_config_keeps_the_admins_settings_but_never_their_accounts(tmp_path):
    box = make_sandbox(tmp_path / "box", students=range(1, 3))
    try:
        mine = parse_config({"vars": {"BRANDING": "Acme"}, "allowed_senders": ["a@b.c"],
                             "students_dir": "/student", "accounts": {"root": "/"},
                             "portal": {"url": "https://real.example.org/api"}})
        data = demo_config_data(box, 12345, mine)
        assert data["portal"]["url"] == box.portal.url
    finally:
        box.close()
    assert data["vars"] == {"BRANDING": "Acme"} and data["allowed_senders"] == ["a@b.c"]
    assert data["students_dir"] == str(box.students_dir)
    assert data["accounts"]["root"] == str(box.accounts_root)
    assert data["listen"]["port"] == 12345
    parse_config(data)  # valid as a whole


# -- which config an admin command reads -------------------------------------------------------


def _jobs_without_config(monkeypatch, capsys, tmp_path, system_config):
    monkeypatch.delenv("WODMAIL_CONFIG", raising=False)
    monkeypatch.setattr("wodmail.config.SYSTEM_CONFIG", system_config)
    code = cli.main(["jobs"])
    return code, capsys.readouterr()


def test_admin_commands_read_the_daemons_config_when_it_exists(monkeypatch, capsys, tmp_path):
    # No --config and no $WODMAIL_CONFIG: /etc/wodmail/wodmail.yml, as the README installs
    # it, is the config of `wodmail`, so `wodmail jobs` finds the daemon's journal.
    system = tmp_path / "etc-wodmail" / "wodmail.yml"
    system.parent.mkdir()
    system.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
    code, out = _jobs_without_config(monkeypatch, capsys, tmp_path, system)
    assert f"wodmail: config {system} (the daemon's config)" in out.err
    # It read that file: the journal it looked for is under the file's state_dir.
    assert code == 1 and str(tmp_path / "state") in out.err


def test_without_any_config_file_the_command_says_it_runs_on_the_defaults(
    monkeypatch, capsys, tmp_path
):
    code, out = _jobs_without_config(monkeypatch, capsys, tmp_path, tmp_path / "none.yml")
    assert "no config file (WODMAIL_CONFIG unset" in out.err
    assert "the built-in defaults" in out.err


def test_wodmail_config_wins_over_the_daemons_config(monkeypatch, capsys, tmp_path):
    system = tmp_path / "system.yml"
    system.write_text("state_dir: /nonexistent/system\n")
    chosen = tmp_path / "chosen.yml"
    chosen.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "chosen-state")}))
    monkeypatch.setenv("WODMAIL_CONFIG", str(chosen))
    monkeypatch.setattr("wodmail.config.SYSTEM_CONFIG", system)
    cli.main(["jobs"])
    err = capsys.readouterr().err
    assert f"config {chosen} ($WODMAIL_CONFIG)" in err
    assert "chosen-state" in err and "/nonexistent/system" not in err


def test_wodmail_test_sends_as_the_daemons_allowed_sender_without_config(
    monkeypatch, capsys, tmp_path
):
    # The switch-day failure: `wodmail-test CREATE ...` without --config used the defaults
    # and was refused `550 sender not allowed: wodmail-test@localhost`.
    system = tmp_path / "wodmail.yml"
    system.write_text(yaml.safe_dump({"allowed_senders": ["wod@portal.example.org"],
                                      "listen": {"host": "127.0.0.1", "port": 1}}))
    monkeypatch.delenv("WODMAIL_CONFIG", raising=False)
    monkeypatch.setattr("wodmail.config.SYSTEM_CONFIG", system)
    from wodmail.config import load_config

    assert testclient.default_sender(load_config()) == "wod@portal.example.org"
    testclient.main(["CREATE", "WKSHP-API101", "3"])  # nothing listens on port 1
    assert f"wodmail-test: config {system} (the daemon's config)" in capsys.readouterr().err


# -- quiet by default --------------------------------------------------------------------------


def _installation_config(tmp_path: Path) -> Path:
    from support.wod_installation import build_installation

    tree = build_installation(tmp_path / "wod")
    # Nothing listens at the portal, the hub or the daemon's port: each call fails at once.
    data = tree.config(state_dir=str(tmp_path / "state"), status={"listen": None},
                       portal={"url": "http://127.0.0.1:1", "user": "u", "password": "p"},
                       hub={"url": "http://127.0.0.1:1", "token": "t"})
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_prints_its_report_and_no_log_lines(capsys, tmp_path):
    code = cli.main(["check-config", "--config", str(_installation_config(tmp_path))])
    out = capsys.readouterr()
    assert code == 1  # the portal and the hub are unreachable: FAIL lines say so
    assert "FAIL" in out.out and "portal" in out.out
    assert [line for line in out.err.splitlines() if line.startswith("{")] == []
    assert out.err.strip().startswith("check-config:")


def test_admin_commands_log_no_debug_lines_without_v(capsys, tmp_path):
    config = _installation_config(tmp_path)
    testclient.main(["CREATE", "WKSHP-API101", "3", "--config", str(config)])
    cli.main(["jobs", "--config", str(config)])
    quiet = capsys.readouterr()
    assert "installation read" not in quiet.out + quiet.err
    cli.main(["-v", "jobs", "--config", str(config)])
    assert "installation read" in capsys.readouterr().err


# -- orders a stopped daemon left running ------------------------------------------------------


async def test_an_order_left_running_by_a_stopped_daemon_shows_interrupted(
    make_config, start_daemon, tmp_path, capsys
):
    from wodmail.dev.standins.mail_clients import send_portal_style_async

    tried = asyncio.Event()

    async def runner(job, ctx):  # the portal is down: the order waits between retries
        from wodmail.dispatch.steps import RetryPolicy, Steps
        from wodmail.errors import PeerUnavailable

        async def down() -> None:
            tried.set()
            raise PeerUnavailable("API-DB", "connection refused")

        await Steps(ctx, RetryPolicy(3600, 3600, 86400)).run("portal customer/1 active", down)
        return {}

    config = make_config()
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump({"state_dir": str(config.state_dir)}))

    def wodmail(*argv: str) -> tuple[int, str]:
        capsys.readouterr()  # the in-process daemon's own log lines so far
        code = cli.main([*argv, "--config", str(path)])
        return code, capsys.readouterr().out

    daemon = await start_daemon(config, runner)
    await send_portal_style_async("127.0.0.1", daemon.port, "CREATE 1 1", "WKSHP-API101")
    await asyncio.wait_for(tried.wait(), 60)
    code, out = wodmail("jobs", "--json")
    assert [job["state"] for job in json.loads(out)] == ["running"]
    # A second daemon on the same journal is refused while the first holds it.
    with pytest.raises(Exception, match="another wodmail serve holds the journal"):
        await start_daemon(config, runner)
    await asyncio.wait_for(daemon.stop(grace=3600), 120)  # no waiting out the grace

    code, out = wodmail("jobs", "--json")
    [job] = json.loads(out)
    assert job["state"] == "interrupted"
    assert job["current_step"]["name"] == "portal customer/1 active"
    code, out = wodmail("jobs", "--state", "interrupted")
    assert code == 0 and "interrupted" in out
    code, out = wodmail("jobs", "--json", "--state", "running")
    assert json.loads(out) == []
    code, out = wodmail("show", "1")
    assert code == cli.EXIT_JOB_UNFINISHED
    assert "job 1: interrupted" in out
