"""`wodmail check-config` checks the world: a sandbox where everything is in place passes;
each thing broken in it is one FAIL line naming it; any FAIL exits 1."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from wodmail import cli
from wodmail.config import parse_config
from wodmail.configcheck import run_checks
from wodmail.dev.sandbox import Sandbox, make_sandbox


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = make_sandbox(tmp_path / "box", students=range(1, 4))
    yield sandbox
    sandbox.close()


def lines(config_data: dict, tmp_path: Path, capsys) -> tuple[int, list[str]]:
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump(config_data))
    code = cli.main(["check-config", "-c", str(path)])
    out = capsys.readouterr().out
    return code, [line for line in out.splitlines() if line.startswith(("ok ", "warn", "FAIL"))]


def test_a_sound_sandbox_passes_every_check(box: Sandbox, tmp_path: Path, capsys):
    code, found = lines(box.config_data(), tmp_path, capsys)
    assert not [line for line in found if line.startswith("FAIL")], found
    assert code == 0
    text = "\n".join(found)
    assert f"ok    portal.url: {box.portal.url}" in text
    assert "ok    portal login: as moderator accepted" in text
    assert "ok    hub token: accepted, may start, stop and read servers" in text
    assert "ok    accounts.admin_user: wodadmin (uid" in text
    assert "ok    homes student1..student3: all in" in text
    assert "ok    student users 1..3: all in" in text
    # every check line says where its value came from
    assert "ok    students_dir: " in text and "[test" not in text
    assert all(line.endswith("]") for line in found if line.startswith("ok    homes"))


def test_each_broken_thing_is_one_fail_line(box: Sandbox, tmp_path: Path, capsys):
    data = box.config_data()
    data["portal"]["url"] = "api.example.org/api"  # no scheme
    data["hub"]["token"] = ""
    data["accounts"]["admin_user"] = "nosuchadmin"
    data["accounts"]["skel"] = [str(tmp_path / "no-skel")]
    data["students"]["max"] = 5  # homes and users exist for 1..3 only
    shutil.rmtree(box.home(2))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        data["listen"]["port"] = taken.getsockname()[1]
        code, found = lines(data, tmp_path, capsys)
    failed = [line for line in found if line.startswith("FAIL")]
    assert code == 1
    text = "\n".join(failed)
    assert "FAIL  portal.url: 'api.example.org/api' has no http:// or https:// scheme" in text
    assert "FAIL  hub token: JupyterHub token is empty" in text
    assert "FAIL  accounts.admin_user: no user nosuchadmin in" in text
    assert f"FAIL  accounts.skel[0]: {tmp_path / 'no-skel'} is not a folder" in text
    assert "FAIL  homes student1..student5: missing in" in text and "student2, 4-5" in text
    assert "FAIL  student users 1..5: missing in" in text and ": 4-5" in text
    assert "is taken by another program (no SMTP greeting)" in text
    origin = f"[{tmp_path / 'wodmail.yml'}]"
    assert all(line.endswith(origin) for line in failed if "portal.url" in line)


def test_homes_open_to_other_users_are_a_warning(box: Sandbox, tmp_path: Path, capsys):
    box.home(1).chmod(0o755)
    box.home(3).chmod(0o701)
    code, found = lines(box.config_data(), tmp_path, capsys)
    assert code == 0
    assert [line for line in found if line.startswith("warn  homes")] == [
        "warn  homes student1..student3: open to other users: student1, 3 (students could read"
        " each other's work; the next order for each closes its home)"
        f"  [{tmp_path / 'wodmail.yml'}]"
    ]


def test_a_hub_token_without_the_servers_scope_fails(box: Sandbox):
    box.hub.set_scopes("read:users")
    found = run_checks(parse_config(box.config_data()))
    [hub] = [check for check in found if check.what == "hub token"]
    assert hub.status == "FAIL" and "may not start servers" in hub.detail


def test_wrong_portal_password_fails_the_login(box: Sandbox):
    data = box.config_data()
    data["portal"]["password"] = "wrong"
    found = run_checks(parse_config(data))
    [login] = [check for check in found if check.what == "portal login"]
    assert login.status == "FAIL" and "wrong" not in login.detail


async def test_the_port_held_by_a_running_wodmail_is_ours(box: Sandbox, start_daemon):
    daemon = await start_daemon(box.config())
    data = box.config_data()
    data["listen"]["port"] = daemon.port
    found = await asyncio.to_thread(run_checks, parse_config(data))  # the daemon must answer
    [listen] = [check for check in found if check.what == "listen"]
    assert (listen.status, listen.detail) == (
        "ok", f"127.0.0.1:{daemon.port} is held by a running wodmail")


def test_the_allowed_senders_in_force_are_printed(box: Sandbox, tmp_path: Path):
    vars_file = tmp_path / "all.yml"
    vars_file.write_text("WODSENDER: wod-portal@example.org\n")
    data = box.config_data()
    data["group_vars"] = [*data["group_vars"], str(vars_file)]
    found = run_checks(parse_config(data))
    [senders] = [check for check in found if check.what == "allowed_senders in force"]
    assert senders.detail == "wod-portal@example.org (from WODSENDER)"
    data["allowed_senders"] = ["a@b.c"]
    [senders] = [c for c in run_checks(parse_config(data))
                 if c.what == "allowed_senders in force"]
    assert senders.detail == "a@b.c (from allowed_senders)"


def test_missing_tools_are_named(box: Sandbox, monkeypatch):
    monkeypatch.setattr("wodmail.host.accounts.find_tool", lambda name: None)
    data = box.config_data()
    data["accounts"]["linux_passwords"] = True
    found = run_checks(parse_config(data))
    failed = {check.what: check.detail for check in found if check.status == "FAIL"}
    assert failed["tool chpasswd"] == "not found (apt-get install passwd)"
    assert failed["tool setfacl"] == "not found (apt-get install acl)"
