"""`wodmail render` knows what the workshop's CREATE hooks set: a variable a handler module
declares (`PROVIDES`) or a stock create script vaults (`ansible-vault encrypt_string ...
--name VAR`) is "set at CREATE by" that hook, not undefined; only what nothing sets fails."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from wodmail import cli
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox

WS = SAMPLE_WORKSHOP


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = make_sandbox(tmp_path / "box", students=range(1, 4))
    yield sandbox
    sandbox.close()


def _setup(box: Sandbox, tmp_path: Path, template: str) -> Path:
    (box.notebooks / WS / "3-Lab.ipynb").write_text(template)
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "ports.py").write_text(textwrap.dedent(f"""
        WORKSHOPS = ("{WS}",)
        PROVIDES = ("HTTPPORT",)

        async def create(ctx):
            ctx.student_vars["HTTPPORT"] = 17000 + ctx.student
    """))
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    script = scripts / f"create-{WS}.sh"
    script.write_text(textwrap.dedent("""\
        #!/bin/bash
        set -e
        token=$(ssh appliance jupyter lab list | cut -d= -f2)
        ansible-vault encrypt_string --vault-password-file "$WODANSIBLEPRIVDIR/vault_secret" \\
            "$token" --name 'SPARKTOK' >> "$pass_file"
        echo "LABURL=http://lab/$stdid" >> "$WODMAIL_VARS_FILE"
    """))
    script.chmod(0o755)
    data = box.config_data()
    data["handlers"] = {"private": str(handlers)}
    data["scripts"] = {"private": str(scripts)}
    path = tmp_path / "wodmail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_variables_hooks_set_are_listed_not_failed(box: Sandbox, tmp_path: Path, capsys):
    config = _setup(box, tmp_path, '{"cells": ["{{ HTTPPORT }} {{ SPARKTOK }} {{ LABURL }}"]}\n')
    assert cli.main(["render", WS, "--student", "2", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"{WS}/3-Lab.ipynb: HTTPPORT is set at CREATE by module " in out
    assert f"{WS}/3-Lab.ipynb: SPARKTOK is set at CREATE by script " in out
    assert f"{WS}/3-Lab.ipynb: LABURL is set at CREATE by script " in out
    assert f"{WS} renders cleanly for student 2" in out


def test_only_genuinely_undefined_variables_fail(box: Sandbox, tmp_path: Path, capsys):
    config = _setup(box, tmp_path, '{"cells": ["{{ HTTPPORT }} {{ NOPE }}"]}\n')
    assert cli.main(["render", WS, "--student", "2", "--config", str(config)]) == 1
    out = capsys.readouterr()
    assert "HTTPPORT is set at CREATE" in out.out
    assert f"{WS}/3-Lab.ipynb: undefined variable 'NOPE'" in out.err
    assert "HTTPPORT" not in out.err


def test_render_out_shows_a_placeholder_for_what_create_sets(
    box: Sandbox, tmp_path: Path, capsys
):
    config = _setup(box, tmp_path, '{"cells": ["port {{ HTTPPORT }}"]}\n')
    out = tmp_path / "out"
    assert cli.main(["render", WS, "--student", "2", "--out", str(out),
                     "--config", str(config)]) == 0
    rendered = (out / "3-Lab.ipynb").read_text()
    assert "port <HTTPPORT: set at CREATE by module " in rendered


def test_a_bad_provides_declaration_is_a_configuration_error(box, tmp_path, capsys):
    config = _setup(box, tmp_path, '{"cells": ["x"]}\n')
    (tmp_path / "handlers" / "ports.py").write_text(
        f'WORKSHOPS = ("{WS}",)\nPROVIDES = "HTTPPORT"\n')
    assert cli.main(["render", WS, "--student", "2", "--config", str(config)]) == 1
    assert "PROVIDES must be a tuple of template variable names" in capsys.readouterr().err
