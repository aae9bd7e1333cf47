"""The package's shape: layers import downwards only, the daemon never loads `wodmail.dev`,
and workshop handler modules use only the handler API (`wodmail.hooks.__all__`,
`wodmail.errors.__all__`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import wodmail
import wodmail.errors
import wodmail.hooks

PACKAGE = Path(wodmail.__file__).parent
WORKSHOPS = Path(__file__).resolve().parents[1] / "workshops"

# Lowest first. A module may import its own top-level part of the package, or a part of a
# lower rank; two parts of one rank are independent of each other.
RANKS = {
    "errors": 0, "logs": 0, "metrics": 0,
    "safefiles": 1,
    "orders": 2, "userdb": 2, "templating": 2,
    "installation": 3, "addresses": 3,
    "config": 4,
    "host": 5, "peers": 5, "appliances": 5, "relay": 5, "journal": 5,
    "hooks": 6, "dispatch": 6,
    "lifecycle": 7, "intake": 7, "status": 7,
    "service": 8, "configcheck": 8,
    "dev": 9,
    "cli": 10,
    "testclient": 11,
    "__main__": 12,
}


def _part(dotted: str) -> str:
    return dotted.split(".")[1] if "." in dotted else "__init__"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        found.append((".".join(["wodmail", *parts]), path))
    return found


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every `wodmail...` module a file imports, anywhere in it (functions included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "wodmail":
                names += [(node.lineno, f"wodmail.{alias.name}") for alias in node.names]
            else:
                names.append((node.lineno, node.module))
    return [(line, name) for line, name in names if name.split(".")[0] == "wodmail"]


def test_every_part_of_the_package_has_a_rank() -> None:
    parts = {_part(name) for name, _ in _modules()} - {"__init__", "workshops"}
    assert parts <= set(RANKS), f"give these a rank in this test: {parts - set(RANKS)}"


def test_at_most_15_modules_at_the_top_level() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 15, top


def test_no_import_runs_up_a_layer() -> None:
    wrong = []
    for name, path in _modules():
        mine = _part(name)
        if mine == "__init__":
            continue
        for line, imported in _imports(path):
            theirs = _part(imported)
            if theirs in (mine, "__init__", "workshops"):
                continue
            if RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_only_the_commands_import_dev() -> None:
    allowed = {"dev", "cli"}
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {imported}"
        for name, path in _modules()
        if _part(name) not in allowed
        for line, imported in _imports(path)
        if _part(imported) == "dev"
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", ["wodmail.service", "wodmail.cli", "wodmail.testclient"])
def test_the_daemon_loads_no_dev_module(module: str) -> None:
    # A fresh interpreter: this test process has long imported the stand-ins.
    loaded = subprocess.run(
        [sys.executable, "-c",
         f"import sys, {module}; print(sorted(m for m in sys.modules if 'wodmail.dev' in m))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert loaded == "[]"


def test_python_dash_m_wodmail_is_the_wodmail_command() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "wodmail", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert shown.startswith("usage: wodmail ")
    assert "check-config" in shown


def test_the_handler_api_names_exist() -> None:
    for module in (wodmail.hooks, wodmail.errors):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, f"{module.__name__}.__all__ names what it lacks: {missing}"
    assert "HookContext" in wodmail.hooks.__all__
    assert {"ConfigurationError", "TransientError", "AccountError"} <= set(
        wodmail.errors.__all__
    )


def _handler_api_violations(path: Path) -> list[str]:
    allowed = {"wodmail.hooks": set(wodmail.hooks.__all__),
               "wodmail.errors": set(wodmail.errors.__all__)}
    wrong = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            wrong += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "wodmail"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "wodmail":
            names = {alias.name for alias in node.names}
            if node.module not in allowed:
                wrong.append(f"line {node.lineno}: from {node.module} import ...")
            elif not names <= allowed[node.module]:
                outside = sorted(names - allowed[node.module])
                wrong.append(f"line {node.lineno}: {outside} not in {node.module}.__all__")
    return wrong


def test_shipped_handler_modules_use_only_the_handler_api() -> None:
    modules = sorted(WORKSHOPS.glob("*.py"))
    assert any(path.name != "__init__.py" for path in modules)
    wrong = {path.name: _handler_api_violations(path) for path in modules}
    assert not any(wrong.values()), wrong


def test_the_handler_api_check_catches_a_module_that_reaches_inside(tmp_path: Path) -> None:
    handler = tmp_path / "sneaky.py"
    handler.write_text(
        "from wodmail.hooks import HookContext\n"
        "from wodmail.host.accounts import wipe_home\n"
        "from wodmail.errors import ConfigurationError, Hidden\n"
    )
    assert _handler_api_violations(handler) == [
        "line 2: from wodmail.host.accounts import ...",
        "line 3: ['Hidden'] not in wodmail.errors.__all__",
    ]
