"""As root, a variables file in a folder another user may write (the WoD user's tree, where
create scripts write pass/variables_<W>_<N>.yml) is not read through a symbolic link: the
link could point at a root-only file whose values would reach a student's notebook."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wodmail.errors import TemplateError
from wodmail.templating.varsfiles import load_vars_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the checks apply when root reads")

OTHER_UID = 61234  # a uid that owns nothing on the host: the WoD user of this test


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "root-only.yml"
    secret.write_text("SHADOW: root-only value\n")
    secret.chmod(0o600)
    return secret


def test_a_link_in_the_wod_users_folder_is_refused_unread(tmp_path: Path) -> None:
    pass_dir = tmp_path / "pass"
    pass_dir.mkdir()
    os.chown(pass_dir, OTHER_UID, OTHER_UID)
    link = pass_dir / "variables_WKSHP-X_3.yml"
    link.symlink_to(_secret(tmp_path))
    with pytest.raises(TemplateError) as refused:
        load_vars_file(link)
    assert "is a symbolic link: refused" in str(refused.value)
    assert "root-only value" not in str(refused.value)


def test_the_wod_users_own_file_is_read(tmp_path: Path) -> None:
    pass_dir = tmp_path / "pass"
    pass_dir.mkdir()
    os.chown(pass_dir, OTHER_UID, OTHER_UID)
    plain = pass_dir / "variables_WKSHP-X_3.yml"
    plain.write_text("HTTPPORT: 14152\n")
    os.chown(plain, OTHER_UID, OTHER_UID)
    assert load_vars_file(plain) == {"HTTPPORT": 14152}


def test_a_link_root_placed_in_its_own_folder_is_followed(tmp_path: Path) -> None:
    own = tmp_path / "etc-wodmail"
    own.mkdir(mode=0o755)
    link = own / "group_vars.yml"
    link.symlink_to(_secret(tmp_path))
    assert load_vars_file(link) == {"SHADOW": "root-only value"}


def test_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    pass_dir = tmp_path / "pass"
    pass_dir.mkdir()
    os.chown(pass_dir, OTHER_UID, OTHER_UID)
    fifo = pass_dir / "variables_WKSHP-X_3.yml"
    os.mkfifo(fifo)
    with pytest.raises(TemplateError, match="not a regular file"):
        load_vars_file(fifo)
