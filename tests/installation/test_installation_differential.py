"""Differential test: `wodmail render` on a WoD installation against ansible-playbook on it.

On one installation tree of our own (tests/support/wod_installation.py: wod.sh with WODANSPLAYOPT /
WODANSPRIVOPT, backend inventory and group_vars, wod-install's group_vars/all.yml, private
inventory, group_vars and generated/<group>, /etc/wod.yml, a vault secret), with public
and private `variables_<W>.yml`, a vaulted per-student HTTPPORT written by
`ansible-vault encrypt_string` as the create scripts write it, and a private
`pre_templating.yml`: ansible-playbook runs our re-creation of `copy_folder.yml` (its
variable loading and template steps; student accounts left out) with the very command
line procmail-action.sh used, through bash with wod.sh sourced. Every templated file must
come out of `wodmail render --out` byte for byte the same: branding and survey values from
the extra-vars files, a group_vars value over a fact (`ansible_fqdn`), facts used directly,
extra vars winning over the workshop's files, and the vaulted HTTPPORT.

`ansible_user_id` is left out: here ansible-playbook runs as the test's user, where the old
backend ran it as the WoD user (wodmail reports the WoD user).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.wod_installation import BACKEND_FQDN, GROUP, Tree, build_installation
from wodmail import cli
from wodmail.host.deploy import delivery

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_VAULT = Path(sys.executable).parent / "ansible-vault"
WORKSHOP = "WKSHP-Diff101"
STDID = 7

NOTEBOOK = """\
{
 "cells": [
  {"source": ["# {{ BRANDINGWOD }} workshop {{ WORKSHOP }} for student{{ STDID }}\\n",
              "Brought to you by {{ BRANDING }} ({{ BRANDINGURL }})"]},
  {"source": ["Your lab: http://{{ WODBEEXTFQDN }}:{{ HTTPPORT }}/student{{ STDID }}\\n",
              "Hub host: {{ JUPYTERFQDN }}, notes in {{ STUDHOMES }}\\n",
              "Docker host: {{ hostvars[inventory_hostname]['IP-WKSHP-Docker101'] }}"]},
  {"source": ["Survey: {{ SURVEYURL }}?w={{ CHALLENGE }}&m={{ MODEWS }}{{ DIR }}"]}
 ]
}
"""
FACTS_SCRIPT = """\
#!/bin/bash
# {{ ansible_fqdn }} {{ ansible_hostname }} {{ ansible_nodename }} {{ ansible_domain }}
# {{ ansible_env.HOME }} {{ ansible_facts['env']['HOME'] }}
# {{ ansible_distribution }} {{ ansible_distribution_major_version }} {{ ansible_os_family }}
# {{ ansible_system }} {{ ansible_kernel }} {{ ansible_architecture }}
# {{ inventory_hostname }} {{ inventory_hostname_short }} {{ group_names | join(',') }}
LAB={{ LABNAME }} LEVEL={{ LEVEL }} WHO={{ WODUSER }} FROM={{ WODSENDER }}
VARS={{ VARDIR }} PRIV={{ VARPRIVDIR }} MAX={{ WODUSERMAX }} BASE={{ WODBASESTDID }}
MON={{ WODMONITOR }} LDAPSETUP={{ WODLDAPSETUP }} UID={{ UIDBASE + STDID | int }}
LEVELS={{ LEVELS }} INI={{ INIVAR }} HOST={{ HOSTLEVEL }} GROUPONLY={{ GROUPONLY }}
"""
CONFIG_YAML = """\
lab:
  name: "{{ LABNAME }}"
  port: {{ HTTPPORT }}
  brand: "{{ BRANDING | upper }}"
"""

# Our re-creation of copy_folder.yml: the same play header and variable loading, then the
# template tasks writing into OUT instead of a student's home.
PLAYBOOK = """\
- name: Copy expanded content into the student directory
  hosts: all
  gather_facts: true
  vars:
    VARDIR: "{{ WODANSIBLEDIR }}/{{ WODGROUP }}"
    VARPRIVDIR: "{{ WODANSIBLEPRIVDIR }}/{{ WODGROUP }}"
  tasks:
    - name: Load variables generated at install time
      ansible.builtin.include_vars: WOD_YML
    - ansible.builtin.stat:
        path: "{{ VARDIR }}/variables_{{ CHALLENGE }}.yml"
      register: variables_file
    - ansible.builtin.include_vars:
        file: "{{ VARDIR }}/variables_{{ CHALLENGE }}.yml"
      when: variables_file.stat.exists
    - ansible.builtin.stat:
        path: "{{ VARPRIVDIR }}/variables_{{ CHALLENGE }}.yml"
      register: privvariables_file
    - ansible.builtin.include_vars:
        file: "{{ VARPRIVDIR }}/variables_{{ CHALLENGE }}.yml"
      when: privvariables_file.stat.exists
    - ansible.builtin.stat:
        path: "{{ VARPRIVDIR }}/pass/variables_{{ CHALLENGE }}_{{ STDID }}.yml"
      register: pass_file
    - ansible.builtin.include_vars:
        file: "{{ VARPRIVDIR }}/pass/variables_{{ CHALLENGE }}_{{ STDID }}.yml"
      when: pass_file.stat.exists
    - ansible.builtin.find:
        paths: "{{ WODNOBO }}/{{ DIR }}/{{ WORKSHOP }}"
        recurse: true
        patterns: ["*.ipynb", "*.yaml", "*.py", "*.sh", "*.src", "*.tf", "*.env", "Variables.ps1"]
        excludes: "*-checkpoint.ipynb"
      register: notebooks
    - ansible.builtin.stat:
        path: "{{ WODANSIBLEPRIVDIR }}/pre_templating.yml"
      register: pretemp
    - ansible.builtin.include_tasks: "{{ WODANSIBLEPRIVDIR }}/pre_templating.yml"
      when: pretemp.stat.exists
    - name: Deliver notebooks as ansible template for variable expansion
      ansible.builtin.template:
        src: "{{ item }}"
        dest: "OUT/{{ item | relpath(WODNOBO ~ '/' ~ WORKSHOP) }}"
        mode: "0644"
      with_items: "{{ notebooks.files | map(attribute='path') | list }}"
"""


def ansible_env(tree: Tree) -> dict[str, str]:
    config = tree.root / "ansible.cfg"
    config.write_text("[defaults]\n")
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tree.home),  # the WoD user's, as procmail ran the playbook
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(tree.root / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tree.root / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tree.root / "ansible-remote"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }


def write_workshop(tree: Tree) -> None:
    folder = tree.notebooks / WORKSHOP
    (folder / "scripts").mkdir(parents=True)
    (folder / "0-ReadMeFirst.ipynb").write_text(NOTEBOOK)
    (folder / "scripts" / "facts.sh").write_text(FACTS_SCRIPT)
    (folder / "lab.yaml").write_text(CONFIG_YAML)
    (folder / "notes.txt").write_text("{{ not rendered }}\n")
    (tree.public_vars / f"variables_{WORKSHOP}.yml").write_text(
        "LABNAME: public-lab\nLEVEL: public\nBRANDING: workshop-branding (an -e wins)\n"
    )
    tree.private_vars.mkdir(parents=True, exist_ok=True)
    (tree.private_vars / f"variables_{WORKSHOP}.yml").write_text("LEVEL: private\n")
    (tree.private_ansible / "pre_templating.yml").write_text(
        "- name: private pre-templating step\n  ansible.builtin.debug:\n"
        "    msg: before templating {{ WORKSHOP }}\n"
    )


def vault_httpport(tree: Tree, env: dict[str, str]) -> None:
    """As create-WKSHP-*.sh do: encrypt_string appended to the per-student pass file."""
    encrypted = subprocess.run(
        [str(ANSIBLE_VAULT), "encrypt_string", "--vault-password-file", str(tree.vault_secret),
         "17161", "--name", "'HTTPPORT'"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    (tree.pass_dir / f"variables_{WORKSHOP}_{STDID}.yml").write_text(encrypted)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip(f"ansible-core (a test dependency) is not installed: no {ANSIBLE_PLAYBOOK}")
    tree = build_installation(tmp_path_factory.mktemp("wod") / "root")
    write_workshop(tree)
    vault_httpport(tree, ansible_env(tree))
    return tree


@pytest.fixture(scope="module")
def ansible_output(tree: Tree) -> Path:
    out = tree.root / "ansible-out"
    for folder in ("", "scripts"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    playbook = tree.ansible / "copy_folder.yml"
    playbook.write_text(PLAYBOOK.replace("WOD_YML", str(tree.wod_yml)).replace("OUT", str(out)))
    # procmail-action.sh's own command line, its $-options expanded unquoted by bash.
    command = (
        'source "$1"; ansible-playbook "$2" -i "$3" $WODPRIVINV --limit "$4" '
        '-e "MODEWS=WKSHP DIR=  CHALLENGE=$5 WORKSHOP=$5 STDID=$6" '
        '$WODANSPLAYOPT $WODANSPRIVOPT --vault-password-file "$7"'
    )
    run = subprocess.run(
        ["bash", "-c", command, "copy", str(tree.wod_sh), str(playbook),
         str(tree.ansible / "inventory"), GROUP, WORKSHOP, str(STDID), str(tree.vault_secret)],
        env=ansible_env(tree), capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, f"ansible-playbook failed:\n{run.stdout}\n{run.stderr}"
    assert "before templating" in run.stdout  # the private pre_templating.yml ran
    return out


@pytest.fixture(scope="module")
def wodmail_output(tree: Tree) -> Path:
    out = tree.root / "wodmail-out"
    config = tree.root / "wodmail.yml"
    config.write_text(yaml.safe_dump(tree.config()))
    assert cli.main(["render", WORKSHOP, "--student", str(STDID), "--out", str(out),
                     "--config", str(config)]) == 0
    return out


def templated(tree: Tree) -> list[Path]:
    folder = tree.notebooks / WORKSHOP
    found = [path.relative_to(folder) for path in folder.rglob("*") if path.is_file()]
    return sorted(path for path in found if delivery(path) == "render")


def test_render_matches_ansible_playbook_on_the_installation(
    tree: Tree, ansible_output: Path, wodmail_output: Path
) -> None:
    files = templated(tree)
    assert len(files) == 3
    for relative in files:
        expected = (ansible_output / relative).read_bytes()
        assert (wodmail_output / relative).read_bytes() == expected, relative


def test_the_values_are_the_installations(tree: Tree, wodmail_output: Path) -> None:
    notebook = (wodmail_output / "0-ReadMeFirst.ipynb").read_text()
    assert "Brought to you by WoD Example (https://wod.example.org)" in notebook
    assert ":17161/student7" in notebook  # the vaulted per-student HTTPPORT
    assert "Docker host: 10.1.2.3" in notebook  # private group_vars/<group>, as an -e
    assert f"Survey: https://survey.wod.example.org/{GROUP}?w={WORKSHOP}&m=WKSHP" in notebook
    facts = (wodmail_output / "scripts" / "facts.sh").read_text()
    assert f"# {tree.home} {tree.home}\n" in facts
    assert "LAB=public-lab LEVEL=private WHO=wodadmin" in facts
    assert "LEVELS=group INI=from-ini HOST=private GROUPONLY=True" in facts


def test_every_inventory_level_variable_is_what_ansible_inventory_says(tree: Tree) -> None:
    """The installer's own way to read values back: `ansible-inventory --host` with the
    inventories, playbook dir and saved -e options (no facts, play vars or include_vars)."""
    import json

    from wodmail.config import parse_config

    command = (
        'source "$1"; ansible-inventory -i "$2" $WODPRIVINV --host "$3" --playbook-dir "$4" '
        '$WODANSPLAYOPT $WODANSPRIVOPT --vault-password-file "$5"'
    )
    run = subprocess.run(
        ["bash", "-c", command, "inv", str(tree.wod_sh), str(tree.ansible / "inventory"),
         BACKEND_FQDN, str(tree.ansible), str(tree.vault_secret)],
        env=ansible_env(tree), capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, f"ansible-inventory failed:\n{run.stdout}\n{run.stderr}"
    expected = json.loads(run.stdout)
    installation = parse_config(tree.config(), "wodmail.yml").wod_installation
    assert installation is not None
    ours: dict[str, object] = {}
    for layer in installation.base_layers:
        if layer.label.startswith(("facts", "inventory magic", str(tree.wod_yml))):
            continue
        if layer.label.endswith("(play vars)"):
            continue
        ours.update(layer.values)
    ours.update(installation.extra_variables())
    assert ours == expected
