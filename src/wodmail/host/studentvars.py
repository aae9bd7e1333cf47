"""Per-student template variables that hooks write (HTTPPORT, SPARKTOK ...), kept on disk.

One small YAML file per student and workshop under ``<state_dir>/student-vars/``, written
atomically, so a value a create hook allocated is still there for the deploy, for a
re-run of the order after a crash, and for the cleanup hook days later.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


class StudentVars:
    def __init__(self, state_dir: Path) -> None:
        self._root = state_dir / "student-vars"

    def _path(self, student: int, content: str) -> Path:
        return self._root / f"student{student}" / f"{content}.yml"

    def load(self, student: int, content: str) -> dict[str, Any]:
        try:
            data = yaml.safe_load(self._path(student, content).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return dict(data) if isinstance(data, dict) else {}

    def save(self, student: int, content: str, values: dict[str, Any]) -> None:
        path = self._path(student, content)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(values, out, default_flow_style=False, allow_unicode=True)
        os.replace(tmp, path)
