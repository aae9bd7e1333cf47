"""Vaulted per-student variables (pass/variables_<W>_<N>.yml), as copy_folder.yml read them.

The files are written the way WoD create scripts write them: `ansible-vault encrypt_string
--vault-password-file <private ansible dir>/vault_secret VALUE --name "'HTTPPORT'"`
appended to the pass file (ansible-core from the test extra).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.wod_installation import GROUP, VAULT_PASSWORD, Tree, build_installation
from wodmail import cli
from wodmail.config import parse_config
from wodmail.errors import TemplateError
from wodmail.lifecycle.backend import Backend
from wodmail.lifecycle.preview import render_workshop
from wodmail.lifecycle.workshop import local_workshop
from wodmail.safefiles import who
from wodmail.templating.vault import EXTRA_HINT

ANSIBLE_VAULT = Path(sys.executable).parent / "ansible-vault"
WORKSHOP = "WKSHP-Vault101"
NOTEBOOK = '{"port": "{{ HTTPPORT }}", "token": "{{ TOKEN }}", "brand": "{{ BRANDING }}"}\n'

pytestmark = pytest.mark.skipif(
    not ANSIBLE_VAULT.exists(),
    reason=f"ansible-core (the test extra) is not installed: no {ANSIBLE_VAULT}",
)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    tree = build_installation(tmp_path / "root")
    folder = tree.notebooks / WORKSHOP
    folder.mkdir(parents=True)
    (folder / "0-ReadMeFirst.ipynb").write_text(NOTEBOOK)
    return tree


def encrypt_string(tree: Tree, value: str, name: str, *extra: str) -> str:
    """What `ansible-vault encrypt_string ... --name "'NAME'"` prints, as the scripts run it."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tree.home),
           "ANSIBLE_HOME": str(tree.root / "ansible-home"), "LC_ALL": "C.UTF-8"}
    args = [str(ANSIBLE_VAULT), "encrypt_string", *extra]
    if not extra:
        args += ["--vault-password-file", str(tree.vault_secret)]
    run = subprocess.run([*args, value, "--name", f"'{name}'"], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return run.stdout


def write_pass_file(tree: Tree, student: int, text: str) -> Path:
    path = tree.pass_dir / f"variables_{WORKSHOP}_{student}.yml"
    path.write_text(text)
    return path


def rendered(tree: Tree, out: Path, student: int = 7) -> str:
    config = parse_config(tree.config(), "wodmail.yml")
    preview = render_workshop(config, WORKSHOP, student, out, None)
    assert preview.issues == [] and preview.written >= 1
    return (out / "0-ReadMeFirst.ipynb").read_text()


def test_vaulted_values_written_by_a_create_script_reach_the_notebook(tree: Tree, tmp_path):
    write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT")
                    + encrypt_string(tree, "tok-3f9a", "TOKEN"))
    assert rendered(tree, tmp_path / "out") == (
        '{"port": "17161", "token": "tok-3f9a", "brand": "WoD Example"}\n'
    )


def test_a_pass_file_written_after_start_is_read_at_render_time(tree: Tree, tmp_path):
    config = parse_config(tree.config(), "wodmail.yml")
    backend = Backend.from_config(config)
    workshop = local_workshop(config, WORKSHOP, WORKSHOP, "WKSHP")
    with pytest.raises(TemplateError, match="HTTPPORT"):
        backend.renderer(workshop, 3, None).render(NOTEBOOK, "nb")
    write_pass_file(tree, 3, encrypt_string(tree, "22161", "HTTPPORT")
                    + encrypt_string(tree, "t", "TOKEN"))
    assert '"port": "22161"' in backend.renderer(workshop, 3, None).render(NOTEBOOK, "nb")


def test_a_whole_file_vault_and_a_labelled_1_2_vault_read_too(tree: Tree, tmp_path):
    path = write_pass_file(tree, 8, "HTTPPORT: 18061\nTOKEN: whole-file\n")
    subprocess.run([str(ANSIBLE_VAULT), "encrypt", "--vault-password-file",
                    str(tree.vault_secret), str(path)], check=True, capture_output=True,
                   env={"PATH": os.environ.get("PATH", ""), "HOME": str(tree.home),
                        "ANSIBLE_HOME": str(tree.root / "ansible-home")}, timeout=120)
    assert path.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert '"port": "18061", "token": "whole-file"' in rendered(tree, tmp_path / "a", 8)
    labelled = encrypt_string(tree, "19061", "HTTPPORT", "--vault-id",
                              f"{GROUP}@{tree.vault_secret}")
    assert f"$ANSIBLE_VAULT;1.2;AES256;{GROUP}" in labelled
    write_pass_file(tree, 9, labelled + "TOKEN: plain\n")
    assert '"port": "19061", "token": "plain"' in rendered(tree, tmp_path / "b", 9)


def test_a_wrong_vault_secret_names_the_file(tree: Tree, tmp_path):
    path = write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT"))
    tree.vault_secret.write_text("not-the-secret\n")
    config = parse_config(tree.config(), "wodmail.yml")
    with pytest.raises(TemplateError, match="cannot decrypt with the vault secret") as caught:
        render_workshop(config, WORKSHOP, 7, None, None)
    assert str(path) in str(caught.value) and "line 1" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)


def test_without_ansible_core_a_vaulted_file_says_what_to_install(tree: Tree, monkeypatch):
    write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT"))
    config = parse_config(tree.config(), "wodmail.yml")  # runs fine without vaulted files
    # As if ansible-core were not installed: its modules cannot be imported.
    monkeypatch.setitem(sys.modules, "ansible.parsing.vault", None)
    monkeypatch.setitem(sys.modules, "ansible.parsing.dataloader", None)
    with pytest.raises(TemplateError) as caught:
        render_workshop(config, WORKSHOP, 7, None, None)
    assert "needs ansible-core" in str(caught.value) and EXTRA_HINT in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_student_without_a_pass_file_has_no_per_student_variables(tree: Tree):
    config = parse_config(tree.config(), "wodmail.yml")
    installation = config.wod_installation
    assert installation is not None and installation.student_variables(WORKSHOP, 5) == {}


# --- whose vault secret root uses -------------------------------------------------------------

WOD_USER_UID = 1001  # wodadmin in the tree's etc/passwd
needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the owner checks apply when wodmail runs as root (and chown needs root)")


def vault_script(tree: Tree, marker: Path) -> None:
    """An executable vault_secret printing the right password, leaving `marker` when run."""
    tree.vault_secret.write_text(f"#!/bin/sh\ntouch {marker}\necho '{VAULT_PASSWORD}'\n")
    tree.vault_secret.chmod(0o755)


def test_an_executable_vault_secret_is_run_for_its_output(tree: Tree, tmp_path):
    """As Ansible does (root's own file when wodmail is root)."""
    write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT")
                    + encrypt_string(tree, "tok-3f9a", "TOKEN"))
    marker = tmp_path / "ran"
    vault_script(tree, marker)
    assert rendered(tree, tmp_path / "out").startswith('{"port": "17161", "token": "tok-3f9a"')
    assert marker.exists()


@needs_root
def test_a_wod_user_s_executable_vault_secret_is_refused_not_run(tree: Tree, tmp_path, capsys):
    path = write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT"))
    marker = tmp_path / "ran"
    vault_script(tree, marker)
    os.chown(tree.vault_secret, WOD_USER_UID, WOD_USER_UID)
    config = parse_config(tree.config(), "wodmail.yml")

    with pytest.raises(TemplateError) as caught:
        render_workshop(config, WORKSHOP, 7, None, None)

    reason = (f"{tree.vault_secret} is an executable owned by {who(WOD_USER_UID)}, mode 0755: "
              "refused, wodmail runs as root and runs no one else's vault password script "
              "(make it root's, or a plain file)")
    assert str(caught.value) == (f"{path}: line 1: encrypted with Ansible Vault; cannot use the "
                                 f"vault secret: {reason}")
    assert not marker.exists()
    config_file = tmp_path / "wodmail.yml"
    config_file.write_text(yaml.safe_dump(tree.config()))
    assert cli.main(["check-config", "--config", str(config_file)]) == 1
    assert f"FAIL  config: vault secret: {reason}" in capsys.readouterr().out.splitlines()
    assert not marker.exists()


@needs_root
@pytest.mark.parametrize(("owner", "mode", "why"), [
    (64998, 0o600, "must belong to root or "),
    (0, 0o664, "group or others may write it"),
    (WOD_USER_UID, 0o606, "group or others may write it"),
])
def test_a_plain_vault_secret_root_would_not_trust_is_refused(tree: Tree, owner, mode, why):
    path = write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT"))
    tree.vault_secret.chmod(mode)
    os.chown(tree.vault_secret, owner, owner)
    config = parse_config(tree.config(), "wodmail.yml")
    with pytest.raises(TemplateError) as caught:
        render_workshop(config, WORKSHOP, 7, None, None)
    message = str(caught.value)
    assert message.startswith(f"{path}: line 1: encrypted with Ansible Vault; cannot use the "
                              f"vault secret: {tree.vault_secret} is owned by ")
    assert f"mode {mode:04o}: refused, it would be read as root and {why}" in message


@needs_root
def test_the_wod_user_s_plain_vault_secret_is_read(tree: Tree, tmp_path):
    write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT")
                    + encrypt_string(tree, "tok-3f9a", "TOKEN"))
    tree.vault_secret.chmod(0o600)
    os.chown(tree.vault_secret, WOD_USER_UID, WOD_USER_UID)
    assert rendered(tree, tmp_path / "out").startswith('{"port": "17161"')


@needs_root
def test_a_symlinked_vault_secret_is_not_followed(tree: Tree):
    path = write_pass_file(tree, 7, encrypt_string(tree, "17161", "HTTPPORT"))
    real = tree.root / "real-secret"
    tree.vault_secret.rename(real)
    tree.vault_secret.symlink_to(real)
    config = parse_config(tree.config(), "wodmail.yml")
    with pytest.raises(TemplateError) as caught:
        render_workshop(config, WORKSHOP, 7, None, None)
    assert str(caught.value) == (
        f"{path}: line 1: encrypted with Ansible Vault; cannot use the vault secret: "
        f"{tree.vault_secret} is a symbolic link: refused, it is not followed")
