"""The stock script re-creations (support.stock_appliance_scripts) render into scripts bash
accepts, every installer placeholder substituted, each saying what it re-creates."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.stock_appliance_scripts import SCRIPTS, StockSettings, write_stock_scripts

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_rendered_stock_scripts_are_bash_with_every_placeholder_filled(tmp_path: Path) -> None:
    folder = write_stock_scripts(tmp_path / "scripts", StockSettings(
        "/student", ansible_private="/home/wodadmin/wod-private/ansible",
        hostvars={"HTTPPORT-WKSHP-Spark101": 17161}))
    assert sorted(path.name for path in folder.iterdir()) == sorted(SCRIPTS)
    for path in folder.iterdir():
        text = path.read_text()
        assert path.stat().st_mode & 0o777 == 0o755
        assert text.startswith("#!/bin/bash\n") and "Re-creation (test fixture)" in text
        checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, (path.name, checked.stderr)
        # No format field left: {NAME} (bash's own ${name} and awk's {print} are fine).
        assert not re.findall(r"(?<![$'])\{[A-Z][A-Za-z0-9_]*\}", text), path.name
    spark = (folder / "create-WKSHP-Spark101.sh").read_text()
    assert "httpport=$(($stdid-$WODAPPMIN+17161))" in spark
    assert f"source {folder}/functions.sh" in spark
    pass_file = "/home/wodadmin/wod-private/ansible/production/pass/variables_${w}_${stdid}.yml"
    assert f'"{pass_file}"' in spark
