"""The config file: defaults, validation errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from wodmail.config import CONFIG_ENV, load_config
from wodmail.errors import ConfigurationError


def test_embedded_defaults(monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    config = load_config(None)
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 10025)
    assert (config.students.min, config.students.max, config.students.base_id) == (1, 20, 0)
    assert config.allowed_networks == ["127.0.0.0/8", "::1/128"]
    assert config.allowed_senders == []
    assert config.students_dir == Path("/student")


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
