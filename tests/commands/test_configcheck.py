"""`wodmail check-config` checks the world: a sandbox where everything is in place passes;
each thing broken in it is one FAIL line naming it; any FAIL exits 1."""

from __future__ import annotations

import asyncio
import os
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
from wodmail.intake import localusers


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


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "refused-local-user"])
async def test_the_port_held_by_a_running_wodmail_is_ours(box: Sandbox, start_daemon, allowed):
    # Run by a user wodmail refuses (554 at connect), the check still knows it is wodmail.
    other = 1 if os.geteuid() != 1 else 2
    daemon = await start_daemon(box.config() if allowed else box.config(
        listen={"host": "127.0.0.1", "port": 0, "local_users": [other]}))
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


def test_the_local_users_in_force_are_printed(box: Sandbox):
    data = box.config_data()
    data["listen"]["local_users"] = ["root", 4242]
    [users] = [c for c in run_checks(parse_config(data)) if c.what == "listen.local_users in force"]
    assert (users.status, users.detail) == (
        "ok", f"uid 0 (root), {localusers.label(4242)} (any other local user gets 554)")
    data["listen"]["local_users"] = ["root", "no-such-admin"]
    [users] = [c for c in run_checks(parse_config(data)) if c.what == "listen.local_users in force"]
    assert (users.status, users.detail) == (
        "FAIL", "uid 0 (root); no such user on this host: no-such-admin"
        " (any other local user gets 554)")


def test_missing_tools_are_named(box: Sandbox, monkeypatch):
    monkeypatch.setattr("wodmail.host.accounts.find_tool", lambda name: None)
    data = box.config_data()
    data["accounts"]["linux_passwords"] = True
    found = run_checks(parse_config(data))
    failed = {check.what: check.detail for check in found if check.status == "FAIL"}
    assert failed["tool chpasswd"] == "not found (apt-get install passwd)"
    assert failed["tool setfacl"] == "not found (apt-get install acl)"


def _status_checks(box: Sandbox, **status: object) -> list[tuple[str, str, str]]:
    data = box.config_data()
    data["status"] = status
    return [(check.status, check.what, check.detail) for check in run_checks(parse_config(data))
            if check.what.startswith("status") and check.what != "status port"]


@pytest.mark.parametrize("listen", ["0.0.0.0:9925", "[::]:9925", "192.0.2.7:9925",
                                    "backend.example.org:9925"])
def test_a_status_listener_beyond_loopback_without_a_token_is_a_warning(box: Sandbox, listen):
    [(status, what, detail)] = _status_checks(box, listen=listen)
    assert (status, what) == ("warn", "status listener")
    assert detail.startswith(f"{listen} is reachable beyond loopback and status.token_file "
                             "is not set: anyone who reaches it reads every order")


@pytest.mark.parametrize("listen", ["127.0.0.1:9925", "[::1]:9925", "localhost:9925"])
def test_a_loopback_status_listener_without_a_token_is_ok(box: Sandbox, listen):
    [(status, _what, detail)] = _status_checks(box, listen=listen)
    assert status == "ok" and "loopback only" in detail
    assert _status_checks(box, listen=None) == [("ok", "status listener", "off")]


def test_the_status_token_file_is_checked(box: Sandbox, tmp_path: Path, capsys):
    token = tmp_path / "status.token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    token.chmod(0o600)
    assert _status_checks(box, listen="0.0.0.0:9925", token_file=str(token)) == [
        ("ok", "status.token_file", f"{token}: a token of 32 characters, required on every "
         "path but /healthz")]
    token.chmod(0o644)
    data = box.config_data()
    data["status"] = {"listen": "127.0.0.1:0", "token_file": str(token)}
    code, found = lines(data, tmp_path, capsys)
    assert code == 1
    assert [line for line in found if line.startswith("FAIL")] == [
        f"FAIL  status.token_file: {token}: readable or writable by others (mode 0644): chmod "
        f"o-rwx it (0600, or 0640 for a group that must read it)  [{tmp_path / 'wodmail.yml'}]"]


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def test_the_status_port_taken_by_another_program_fails(box: Sandbox):
    # serve would start without its status listener ("status listener not started"), while
    # check-config said 0 failures.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        data = box.config_data()
        data["status"] = {"listen": f"127.0.0.1:{port}"}
        found = run_checks(parse_config(data))
    [status] = [check for check in found if check.what == "status port"]
    assert status.status == "FAIL"
    assert f"127.0.0.1:{port} is taken by another program" in status.detail


async def test_the_status_port_of_a_running_wodmail_is_ours(box: Sandbox, start_daemon):
    port = _free_port()
    data = box.config_data()
    data["status"] = {"listen": f"127.0.0.1:{port}"}
    await start_daemon(parse_config(data))
    found = await asyncio.to_thread(run_checks, parse_config(data))  # the daemon must answer
    [status] = [check for check in found if check.what == "status port"]
    assert (status.status, status.detail) == (
        "ok", f"127.0.0.1:{port} is held by a running wodmail")
    # and a free one is said to be free
    data["status"] = {"listen": f"127.0.0.1:{_free_port()}"}
    found = await asyncio.to_thread(run_checks, parse_config(data))  # it runs its own loops
    [free] = [c for c in found if c.what == "status port"]
    assert free.status == "ok" and free.detail.endswith("is free")


def test_an_installation_folder_a_stock_install_lacks_is_none_not_a_warning(tmp_path: Path):
    # A stock install has no ansible/production (the public variables folder
    # copy_folder.yml looked into): check-config says "none" for it, as it is no problem.
    from support.wod_installation import build_installation

    tree = build_installation(tmp_path / "wod")
    shutil.rmtree(tree.public_vars, ignore_errors=True)
    data = tree.config(state_dir=str(tmp_path / "state"), status={"listen": None})
    found = {check.what: check for check in run_checks(parse_config(data))}
    public_vars = found["notebooks.public_vars"]
    assert (public_vars.status, public_vars.detail) == (
        "ok", f"none ({tree.public_vars} does not exist)")
    # Named in wodmail.yml, a missing folder is still worth a warning.
    data["notebooks"] = {**data.get("notebooks", {}), "public_vars": str(tree.public_vars)}
    found = {check.what: check for check in run_checks(parse_config(data))}
    assert found["notebooks.public_vars"].status == "warn"
