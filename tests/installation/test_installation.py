"""Reading a WoD installation: settings and template variables as its own scripts saw them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import yaml

from support.wod_installation import (
    BACKEND_FQDN,
    GROUP,
    HUB_TOKEN,
    PORTAL_PASSWORD,
    USER,
    Tree,
    build_installation,
)
from wodmail import cli
from wodmail.config import load_base_variables, load_config, parse_config, provenance
from wodmail.configcheck import run_checks
from wodmail.errors import ConfigurationError
from wodmail.installation.reader import source_wod_sh
from wodmail.lifecycle.backend import Backend
from wodmail.safefiles import UnsafeFile
from wodmail.templating.renderer import Renderer

OWNER_UID = 62981  # a uid no account has: the WoD user in the ownership test


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return build_installation(tmp_path / "root")


def test_settings_come_from_the_installation(tree: Tree) -> None:
    config = parse_config(tree.config(), "wodmail.yml")
    assert config.students.min == 1
    assert config.students.max == 40
    assert config.students.base_id == 2000
    assert config.students_dir == tree.students
    assert config.listen.port == 10031
    assert config.allowed_senders == ["portal@wod.example.org"]
    assert config.portal.url == "http://api.wod.example.org:8021/api"
    assert (config.portal.user, config.portal.password) == ("moderator", PORTAL_PASSWORD)
    assert (config.hub.url, config.hub.token) == (f"http://{BACKEND_FQDN}:8000", HUB_TOKEN)
    ldap = config.accounts.ldap
    assert (ldap.server, ldap.port, ldap.base_dn) == (
        "ldap.wod.example.org", 1389, "dc=wod,dc=example,dc=org"
    )
    assert config.accounts.admin_user == USER
    assert config.notebooks.public == tree.notebooks
    assert config.notebooks.private == tree.private / "notebooks"
    assert config.notebooks.public_vars == tree.public_vars
    assert config.notebooks.private_vars == tree.private_vars
    assert config.scripts.public == tree.backend / "scripts"
    assert config.scripts.private == tree.private / "scripts"
    assert config.accounts.skel == [tree.install / "skel"]


def test_explicit_keys_win_and_provenance_says_where_each_value_came_from(tree: Tree) -> None:
    data = tree.config(students={"max": 12}, hub={"timeout_seconds": 30})
    config = parse_config(data, "/etc/wodmail/wodmail.yml")
    assert config.students.max == 12
    assert config.hub.token == HUB_TOKEN  # the rest of the section still from the installation
    origins = provenance(config)
    assert origins["students.max"] == "/etc/wodmail/wodmail.yml"
    assert origins["hub.timeout_seconds"] == "/etc/wodmail/wodmail.yml"
    assert origins["students.min"] == (
        f"WODUSERMIN from -e @{tree.install}/ansible/group_vars/all.yml (WODANSPLAYOPT)"
    )
    assert origins["students.base_id"] == (
        f"WODBASESTDID from -e @{tree.private_ansible}/generated/{GROUP} (WODANSPRIVOPT)"
    )
    assert origins["hub.token"] == f"WODBETOKEN from {tree.ansible}/group_vars/all.yml"
    assert origins["allowed_senders"] == f"WODSENDER from {tree.wod_yml}"
    assert origins["portal.password"] == (
        f"WODAPIDBUSERPWD from {tree.private}/scripts/wod-private.sh"
    )
    assert origins["dispatch.concurrency"] == "default"
    assert set(origins) >= {"listen.host", "accounts.ldap.server", "vars", "installation.wod_sh"}


def test_no_installation_block_reads_nothing(tmp_path: Path) -> None:
    config = parse_config({"state_dir": str(tmp_path)}, "wodmail.yml")
    assert config.wod_installation is None
    assert config.students.max == 20
    assert provenance(config)["students.max"] == "default"


def test_template_variables_are_layered_as_ansible_playbook_layers_them(tree: Tree) -> None:
    config = parse_config(tree.config(), "wodmail.yml")
    installation = config.wod_installation
    assert installation is not None
    renderer = Renderer(load_base_variables(config))
    text = (
        "{{ BRANDING }}|{{ SURVEYURL }}|{{ JUPYTERFQDN }}|{{ WODBEEXTFQDN }}|{{ STUDHOMES }}|"
        "{{ hostvars[inventory_hostname]['IP-WKSHP-Docker101'] }}|{{ WODMONITOR }}|"
        "{{ inventory_hostname }}|{{ VARPRIVDIR }}|{{ WODLDAPSETUP }}"
    )
    assert renderer.render(text, "t") == (
        f"WoD Example|https://survey.wod.example.org/{GROUP}|{socket.getfqdn()}|{BACKEND_FQDN}|"
        f"{tree.home}/students-notes|10.1.2.3|ops@wod.example.org|{BACKEND_FQDN}|"
        f"{tree.private_ansible}/{GROUP}|0"
    )
    assert installation.origin("BRANDING") == (
        f"-e @{tree.install}/ansible/group_vars/all.yml (WODANSPLAYOPT)"
    )
    # The installer's generated file is an extra-vars file: it wins over group_vars.
    assert installation.origin("WODBEEXTFQDN") == (
        f"-e @{tree.private_ansible}/generated/{GROUP} (WODANSPRIVOPT)"
    )


def test_the_hooks_api(tree: Tree) -> None:
    installation = parse_config(tree.config(), "wodmail.yml").wod_installation
    assert installation is not None
    assert installation.wod_sh == tree.wod_sh
    assert installation.values["WODSCRIPTPRIVDIR"] == str(tree.private / "scripts")
    assert installation.values["WODAPIDBUSERPWD"] == PORTAL_PASSWORD
    assert installation.private_sh == tree.private / "scripts" / "wod-private.sh"
    assert installation.group == GROUP
    assert installation.user == USER
    assert installation.vault_secret_file == tree.vault_secret
    assert installation.pass_file("CHLG-X101", 7) == tree.pass_dir / "variables_CHLG-X101_7.yml"
    args = installation.playbook_args()
    assert args[:6] == ["-i", str(tree.ansible / "inventory"),
                        "-i", str(tree.private_ansible / "inventory"), "--limit", GROUP]
    assert "--vault-password-file" not in args  # a checked copy of it, when given one:
    copy = tree.root / "run" / "vault-password"
    assert installation.playbook_args(copy)[-2:] == ["--vault-password-file", str(copy)]


def test_overrides_say_where_to_look(tree: Tree, tmp_path: Path) -> None:
    moved = tmp_path / "moved-private"
    tree.private.rename(moved)
    data = tree.config()
    data["installation"]["private_dir"] = str(moved)
    with pytest.raises(ConfigurationError, match="WODANSPRIVOPT: -e @"):
        parse_config(data, "wodmail.yml")  # wod.sh's saved -e options still name the old place
    tree.private.symlink_to(moved)
    config = parse_config(data, "wodmail.yml")
    assert config.scripts.private == moved / "scripts"
    assert config.notebooks.private_vars == moved / "ansible" / GROUP
    assert provenance(config)["scripts.private"] == "installation overrides"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.wod_sh.unlink(), "installation.wod_sh: cannot read .*wod.sh"),
        (lambda t: t.wod_yml.unlink(), "installation.wod_yml: .*wod.yml does not exist"),
        (lambda t: (t.ansible / "inventory").unlink(), "no backend inventory at"),
        (lambda t: (t.ansible / "inventory").write_text("[staging]\nhost1\n"),
         r"no host in group \[production\]"),
        (lambda t: (t.install / "ansible/group_vars/all.yml").unlink(),
         "WODANSPLAYOPT: -e @.*all.yml: cannot read"),
        (lambda t: (t.install / "ansible/group_vars/all.yml").write_text("WODUSERMAX: many\n"),
         "students.max: WODUSERMAX .* is 'many', not usable here"),
    ],
)
def test_a_broken_installation_is_a_one_line_error(tree: Tree, change, message) -> None:
    change(tree)
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_config(tree.config(), "wodmail.yml")
    assert "\n" not in str(caught.value)


def test_a_bad_installation_key_names_it(tree: Tree) -> None:
    data = tree.config()
    data["installation"]["wod_shh"] = "/etc/wod.sh"
    with pytest.raises(ConfigurationError, match="wodmail.yml: installation.wod_shh: Extra"):
        parse_config(data, "wodmail.yml")


def test_backend_renders_with_the_installation_hostname(tree: Tree) -> None:
    backend = Backend.from_config(parse_config(tree.config(), "wodmail.yml"))
    assert backend.base_vars["inventory_hostname"] == BACKEND_FQDN


def test_check_config_prints_each_value_with_its_origin(tree: Tree, tmp_path: Path, capsys):
    data = tree.config(vars={"BRANDING": "mine", "OWN": 1}, students={"max": 12})
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump(data))
    # The tree has no running portal or hub and no homes: those world checks fail (exit 1).
    assert cli.main(["check-config", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "FAIL  portal login: " in out
    lines = {line.split()[0]: line for line in out.splitlines() if line}
    assert lines["students.max"].endswith(f"12  ({path})")
    assert lines["students.min"].endswith(
        f"1  (WODUSERMIN from -e @{tree.install}/ansible/group_vars/all.yml (WODANSPLAYOPT))"
    )
    assert lines["hub.token"].split()[1] == '"***"'
    assert lines["dispatch.concurrency"].endswith("(default)")
    assert PORTAL_PASSWORD not in out and HUB_TOKEN not in out
    assert "warn  config: vars.BRANDING is overridden by the installation's -e @" in out
    assert "vars.OWN" not in out
    assert "no vault secret" not in out
    tree.vault_secret.unlink()
    assert cli.main(["check-config", "--config", str(path)]) == 1
    assert f"warn  config: no vault secret at {tree.vault_secret}" in capsys.readouterr().out
    assert cli.main(["check-config", "--json", "--config", str(path)]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert shown["students"]["max"] == 12
    assert shown["origins"]["students.max"] == str(path)


async def test_a_reload_reads_the_installation_again(tree: Tree, tmp_path: Path, start_daemon):
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump(tree.config(listen={"host": "127.0.0.1", "port": 0})))
    daemon = await start_daemon(load_config(path))
    assert daemon.config.students.max == 40
    install_vars = tree.install / "ansible" / "group_vars" / "all.yml"
    install_vars.write_text(install_vars.read_text().replace("WODUSERMAX: 40", "WODUSERMAX: 30"))
    assert await daemon.reload()
    assert daemon.config.students.max == 30
    assert daemon.config.wod_installation is not None
    tree.wod_yml.unlink()
    assert not await daemon.reload()  # refused with the reason: the running one stays
    assert daemon.config.students.max == 30


def test_without_ansible_core_check_config_says_what_to_install(tree: Tree, monkeypatch):
    installation = parse_config(tree.config(), "wodmail.yml").wod_installation
    assert installation is not None and installation.check() == []
    # As if ansible-core were not installed.
    monkeypatch.setattr("wodmail.installation.reader.importlib.util.find_spec", lambda name: None)
    (warning,) = installation.check()
    assert "ansible-core is not installed" in warning and "wodmail[ansible]" in warning


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give wod.sh to another user")
def test_a_wod_sh_owned_by_the_wod_user_is_sourced_with_its_rights(tmp_path: Path) -> None:
    # A world-traversable place, as /etc is (pytest's tmp_path is private to root).
    root = Path(tempfile.mkdtemp(prefix="wodmail-owner-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        tree = build_installation(root / "root")
        for folder in [tree.root, *tree.wod_sh.parents][:3]:
            os.chmod(folder, 0o755)
        with tree.wod_sh.open("a") as out:
            out.write("export WODMAIL_SOURCED_BY=$(id -u)\n")
        os.chmod(tree.wod_sh, 0o755)
        os.chown(tree.wod_sh, OWNER_UID, OWNER_UID)
        values, _ = source_wod_sh(tree.wod_sh, None)
        assert values["WODMAIL_SOURCED_BY"] == str(OWNER_UID)
    finally:
        shutil.rmtree(root)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the owner and mode checks apply when wodmail runs as root (and chown needs root)")


@needs_root
def test_a_wod_sh_others_may_write_is_refused_and_check_config_fails(
    tree: Tree, tmp_path: Path, capsys
) -> None:
    tree.wod_sh.chmod(0o666)
    reason = (f"{tree.wod_sh} is owned by root (uid 0), mode 0666: refused, it would be sourced "
              "as root and group or others may write it (chmod go-w)")
    with pytest.raises(UnsafeFile) as caught:
        parse_config(tree.config(), "wodmail.yml")
    assert str(caught.value) == reason

    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump(tree.config()))
    assert cli.main(["check-config", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"FAIL  installation: {reason}" in out.splitlines()
    assert err.splitlines()[0] == f"wodmail: {reason}"
    assert cli.main(["check-config", "--json", "--config", str(path)]) == 1
    [check] = json.loads(capsys.readouterr().out)["checks"]
    assert (check["status"], check["what"], check["detail"]) == ("FAIL", "installation", reason)


@needs_root
def test_a_wod_private_sh_root_does_not_own_is_not_sourced_as_root(tree: Tree) -> None:
    private = tree.private / "scripts" / "wod-private.sh"
    private.chmod(0o644)
    os.chown(private, OWNER_UID, OWNER_UID)
    with pytest.raises(UnsafeFile) as caught:
        parse_config(tree.config(), "wodmail.yml")
    assert str(caught.value) == (
        f"{private} is owned by uid {OWNER_UID}, mode 0644: refused, it would be sourced as "
        f"root after {tree.wod_sh} and must belong to root")


@needs_root
def test_a_symlinked_wod_private_sh_is_not_followed_as_root(tree: Tree) -> None:
    private = tree.private / "scripts" / "wod-private.sh"
    elsewhere = tree.root / "elsewhere.sh"
    private.rename(elsewhere)
    private.symlink_to(elsewhere)
    with pytest.raises(UnsafeFile) as caught:
        parse_config(tree.config(), "wodmail.yml")
    assert str(caught.value) == f"{private} is a symbolic link: refused, it is not followed"


@needs_root
def test_the_wod_user_s_own_files_are_sourced_with_its_rights_unless_others_may_write(
    tree: Tree,
) -> None:
    private = tree.private / "scripts" / "wod-private.sh"
    with private.open("a") as out:
        out.write("export WODMAIL_PRIVATE_SOURCED_BY=$(id -u)\n")
    for path in (tree.wod_sh, private):
        path.chmod(0o640)
        os.chown(path, OWNER_UID, OWNER_UID)
    values, found = source_wod_sh(tree.wod_sh, None)
    assert (values["WODMAIL_PRIVATE_SOURCED_BY"], found) == (str(OWNER_UID), private)
    assert values["WODAPIDBUSERPWD"] == PORTAL_PASSWORD

    private.chmod(0o660)
    with pytest.raises(UnsafeFile) as caught:
        source_wod_sh(tree.wod_sh, None)
    assert str(caught.value) == (
        f"{private} is owned by uid {OWNER_UID}, mode 0660: refused, it would be sourced as "
        f"uid {OWNER_UID} after {tree.wod_sh} and group or others may write it (chmod go-w)")


# -- where the portal reaches the backend --------------------------------------------------------


def _named(tree: Tree, backend: str, api_db: str) -> None:
    """The tree's backend and API-DB host names replaced (in every file that names them)."""
    for path in tree.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_text(errors="replace")
            new = text.replace("be.wod.example.org", backend).replace("api.wod.example.org",
                                                                        api_db)
            if new != text:
                path.write_text(new)


def _without_listen(tree: Tree, **overrides: object) -> dict:
    data = tree.config(**overrides)
    del data["listen"]
    return data


def test_listen_and_networks_follow_the_backend_and_the_api_db(tree: Tree) -> None:
    # Postfix listened on inet_interfaces = WODBEFQDN, localhost, and the API-DB connects to
    # WODBEFQDN:WODPOSTPORT from its own host: with loopback-only defaults the portal was
    # locked out after the switch. (Addresses as names: they resolve without a DNS server.)
    _named(tree, backend="192.0.2.10", api_db="198.51.100.7")
    config = parse_config(_without_listen(tree), "wodmail.yml")
    assert config.listen.hosts == ["192.0.2.10", "127.0.0.1"]
    assert provenance(config)["listen.host"].startswith("WODBEFQDN from ")
    assert config.allowed_networks == ["127.0.0.0/8", "::1/128", "198.51.100.7/32"]
    assert "loopback and the API-DB host 198.51.100.7" in provenance(config)["allowed_networks"]
    # wodmail.yml still wins
    mine = parse_config(tree.config(listen={"host": "127.0.0.1"}), "wodmail.yml")
    assert mine.listen.hosts == ["127.0.0.1"]


def test_unresolvable_names_leave_loopback(tree: Tree) -> None:
    config = parse_config(_without_listen(tree), "wodmail.yml")  # *.example.org: unresolvable
    assert config.listen.hosts == ["127.0.0.1"]
    assert config.allowed_networks == ["127.0.0.0/8", "::1/128"]


def test_check_config_warns_when_the_portals_address_would_be_refused(tree: Tree) -> None:
    _named(tree, backend="192.0.2.10", api_db="198.51.100.7")
    data = tree.config(allowed_networks=["192.0.2.0/24"], status={"listen": None})
    found = {c.what: c for c in run_checks(parse_config(data, "wodmail.yml"))}
    check = found["portal's address"]
    assert check.status == "warn" and "198.51.100.7" in check.detail
    assert "outside allowed_networks" in check.detail
    data = tree.config(status={"listen": None})
    found = {c.what: c for c in run_checks(parse_config(data, "wodmail.yml"))}
    assert found["portal's address"].status == "ok"


async def test_the_daemon_listens_on_every_address(tree: Tree, start_daemon) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    config = parse_config(tree.config(listen={"host": ["127.0.0.1", "127.0.0.2"], "port": port},
                                      status={"listen": None}), "wodmail.yml")
    await start_daemon(config)
    for host in ("127.0.0.1", "127.0.0.2"):
        assert (await asyncio.to_thread(_greeting, host, port)).startswith(b"220 ")


def _greeting(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=60) as client:
        return client.recv(200)
