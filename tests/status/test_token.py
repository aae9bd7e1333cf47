"""`status.token_file`: only a file safe from the other local users, holding a real token,
is taken; anything else is one line naming the file and what to do."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from wodmail.status.token import TokenFileError, read_token

TOKEN = secrets.token_hex(32)


def _file(tmp_path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "status.token"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440, 0o700])
def test_a_token_only_its_owner_and_group_can_read_is_taken(tmp_path, mode):
    assert read_token(_file(tmp_path, f"  {TOKEN}\n", mode)) == TOKEN


@pytest.mark.parametrize(("mode", "problem"), [
    (0o644, "readable or writable by others (mode 0644): chmod o-rwx it"),
    (0o602, "readable or writable by others (mode 0602): chmod o-rwx it"),
    (0o660, "writable by its group (mode 0660): chmod g-w it"),
])
def test_a_token_others_can_read_or_change_is_refused(tmp_path, mode, problem):
    path = _file(tmp_path, TOKEN, mode)
    with pytest.raises(TokenFileError) as refused:
        read_token(path)
    assert str(refused.value).startswith(f"status.token_file {path}: {problem}")
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize(("content", "problem"), [
    ("", "empty (e.g. openssl rand -hex 32 > FILE)"),
    ("\n  \n", "empty (e.g. openssl rand -hex 32 > FILE)"),
    ("0123456789abcde", "the token has 15 characters; use at least 16"),
    (f"{TOKEN}\n{TOKEN}\n", "the token is not one word of printable ASCII"),
    (f"Bearer {TOKEN}", "the token is not one word of printable ASCII"),
    (f"{TOKEN}é", "not ASCII text"),
    (b"\xff" * 40, "not ASCII text"),
    ("x" * 5000, "larger than 4096 bytes: not a token"),
])
def test_a_file_without_one_good_token_is_refused(tmp_path, content, problem):
    path = _file(tmp_path, content)
    with pytest.raises(TokenFileError) as refused:
        read_token(path)
    assert str(refused.value).startswith(f"status.token_file {path}: {problem}")


def test_what_is_not_a_readable_file_is_refused(tmp_path):
    with pytest.raises(TokenFileError, match="cannot open it: No such file or directory"):
        read_token(tmp_path / "missing")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # would block a reader forever
    with pytest.raises(TokenFileError, match="fifo: not a regular file"):
        read_token(fifo)
    with pytest.raises(TokenFileError, match="not a regular file"):
        read_token(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_token_file_owned_by_another_user_is_refused(tmp_path):
    path = _file(tmp_path, TOKEN)
    os.chown(path, 65534, -1)  # nobody: a student could be this owner
    with pytest.raises(TokenFileError) as refused:
        read_token(path)
    assert "owned by uid 65534, neither root nor wodmail's own user" in str(refused.value)
