"""The config file: defaults, validation errors that name the file and the key."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from wodmail.config import CONFIG_ENV, load_config, parse_config
from wodmail.errors import ConfigurationError
from wodmail.intake.gate import GatePolicy


def test_embedded_defaults(monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    config = load_config(None)
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 10025)
    assert (config.students.min, config.students.max, config.students.base_id) == (1, 20, 0)
    assert config.allowed_networks == ["127.0.0.0/8", "::1/128"]
    assert config.allowed_senders == []
    assert config.students_dir == Path("/student")
    listen = config.listen
    assert (listen.max_connections, listen.max_connections_per_ip,
            listen.max_connections_per_uid) == (256, 128, 64)
    assert (listen.greeting_timeout_seconds, listen.local_users) == (30.0, None)


def test_local_users_default_to_root_woduser_and_wodmails_own_user():
    me = pwd.getpwuid(os.geteuid()).pw_name
    policy = GatePolicy.from_config(parse_config({"accounts": {"admin_user": me}}))
    assert policy.local_users.uids == {0, os.geteuid()}
    assert not policy.local_users.allows(max(policy.local_users.uids) + 1)
    # names and uids mix; a name this host lacks is left out, and said so
    users = parse_config({"listen": {"local_users": ["root", 4242, "no-such-user-x"]}})
    policy = GatePolicy.from_config(users)
    assert policy.local_users.uids == {0, 4242}
    assert policy.local_users.unknown == ("no-such-user-x",)


def test_file_from_env(tmp_path: Path, monkeypatch):
    path = tmp_path / "wodmail.yml"
    path.write_text("listen:\n  port: 2525\nstudents:\n  min: 100\n  max: 150\n  base_id: 1000\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    config = load_config(None)
    assert config.listen.port == 2525
    assert (config.students.min, config.students.max, config.students.base_id) == (100, 150, 1000)
    assert config.source == path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("students:\n  max: lots\n", "students.max: Input should be a valid integer"),
        ("listen:\n  prot: 25\n", "listen.prot: Extra inputs are not permitted"),
        ("allowed_networks: [10.0.0.0/33]\n", "allowed_networks: Value error, not a network"),
        ("students:\n  min: 9\n  max: 3\n", "students.min (9) is greater than students.max (3)"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("listen: [\n", "not valid YAML"),
        ("listen:\n  local_users: [root, yes]\n",
         "listen.local_users: Value error, not a user name or uid: True"),
        ("listen:\n  local_users: [-3]\n", "listen.local_users: Value error, not a uid: -3"),
        ("listen:\n  local_users: ['wod admin']\n",
         "listen.local_users: Value error, not a user name: 'wod admin'"),
        ("listen:\n  max_connections_per_uid: 0\n",
         "listen.max_connections_per_uid: Input should be greater than or equal to 1"),
        ("listen:\n  greeting_timeout_seconds: 0\n",
         "listen.greeting_timeout_seconds: Input should be greater than 0"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yml")
