"""Legacy hook scripts: `<phase>-<WS>.sh` in the public and private script folders.

A script runs only when present and executable; it gets procmail-action.sh's variables and
may write `KEY=VALUE` lines to `WODMAIL_VARS_FILE` (see `wodmail.hooks`), and
`WODMAIL_SECRET=value` lines for values to mask.

The vars file is in the one folder the script's user may write: it is read only as a
regular file of that user with a single name, through a descriptor opened without
following a symbolic link, and at most `VARS_CAP` bytes of it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from wodmail.errors import ConfigurationError, HookFailed
from wodmail.hooks._process import Workspace
from wodmail.hooks.context import PHASES, HookContext
from wodmail.logs import MIN_SECRET_LENGTH
from wodmail.safefiles import UnsafeFile, open_file, owned, read_all

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
SECRET_KEY = "WODMAIL_SECRET"
VARS_CAP = 1024 * 1024
MAX_SECRETS = 64


def script_name(phase: str, content: str) -> str:
    return f"{phase.replace('_', '-')}-{content}.sh"


def executable_script(folder: Path | None, phase: str, content: str) -> Path | None:
    if folder is None:
        return None
    script = folder / script_name(phase, content)
    if script.is_file() and os.access(script, os.X_OK):
        return script
    return None


def ignored_script(folder: Path | None, phase: str, content: str) -> Path | None:
    if folder is None:
        return None
    script = folder / script_name(phase, content)
    return script if script.is_file() and not os.access(script, os.X_OK) else None


def check_startable(script: Path) -> None:
    try:
        with script.open("rb") as stream:
            head = stream.read(256)
    except OSError as exc:
        raise ConfigurationError(f"hook script {script} cannot be read: {exc.strerror}") from exc
    if head.startswith(b"\x7fELF"):
        return
    if not head.startswith(b"#!"):
        raise ConfigurationError(
            f"hook script {script} has no #! line: it cannot be started (add #!/bin/bash)"
        )
    words = head[2:].split(b"\n", 1)[0].split()
    interpreter = Path(os.fsdecode(words[0])) if words else None
    if interpreter is None or not os.access(interpreter, os.X_OK):
        raise ConfigurationError(
            f"hook script {script}: its interpreter {interpreter} is not an executable file"
        )


def ignored_scripts(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    prefixes = tuple(f"{phase.replace('_', '-')}-" for phase in PHASES)
    return sorted(
        path
        for path in folder.glob("*.sh")
        if path.name.startswith(prefixes) and path.is_file() and not os.access(path, os.X_OK)
    )


def script_vars(ctx: HookContext, vars_file: Path) -> dict[str, str]:
    """The variables procmail-action.sh exported to a script, and WODMAIL_VARS_FILE."""
    env: dict[str, str] = dict(ctx.exports)
    student = ctx.student if ctx.student is not None else min(ctx.students, default=None)
    if student is not None:
        env["stdid"] = str(student)
    env["w"] = ctx.workshop
    env["ws"] = ctx.content
    if ctx.workshop_id is not None:
        env["wid"] = str(ctx.workshop_id)
    home = ctx.home
    if home is None and student is not None:
        home = ctx.homes.get(student)
    if home is not None:
        env["stddir"] = str(home)
    if ctx.password:
        env["randompw"] = ctx.password
    if ctx.target:
        env["WODRTARGET"] = ctx.target
    env["WODMAIL_VARS_FILE"] = str(vars_file)
    return env


@dataclass(frozen=True)
class Declared:
    """What a script wrote to WODMAIL_VARS_FILE: variables, and values to mask."""

    values: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)


def read_declared(workspace: Workspace, hook: str) -> Declared:
    """The script's WODMAIL_VARS_FILE; HookFailed when it is unsafe to read or malformed.

    A file the script removed declares nothing. Never says anything of what a link or a
    foreign file it was replaced with points at.
    """
    path = workspace.vars_file
    try:
        fd = open_file(path, follow=False)
    except FileNotFoundError:
        return Declared()
    except UnsafeFile as exc:
        raise HookFailed(hook, f"WODMAIL_VARS_FILE {exc.problem}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != workspace.owner:
            raise HookFailed(hook, f"WODMAIL_VARS_FILE is {owned(info)}, not the script's "
                                   "user's: refused")
        if info.st_nlink != 1:
            raise HookFailed(hook, f"WODMAIL_VARS_FILE has {info.st_nlink} names (a hard "
                                   "link): refused")
        try:
            data = read_all(fd, VARS_CAP, path)
        except UnsafeFile:
            raise HookFailed(hook, f"WODMAIL_VARS_FILE holds over {VARS_CAP} bytes: "
                                   "refused") from None
    finally:
        os.close(fd)
    return parse_declared(data.decode("utf-8", errors="replace"), hook)


def parse_declared(text: str, hook: str) -> Declared:
    """`KEY=VALUE` lines (blank lines and `#` comments allowed, quotes around a value
    removed); `WODMAIL_SECRET=value` lines are values to mask, not variables."""
    declared = Declared()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        key = key.strip()
        if not equals or not _VAR_NAME.match(key):
            raise HookFailed(
                hook, f"line {number} of WODMAIL_VARS_FILE is not KEY=VALUE (KEY an identifier)"
            )
        value = _unquoted(value.strip())
        if key == SECRET_KEY:
            declared.secrets.append(_secret(value, number, len(declared.secrets), hook))
        else:
            declared.values[key] = value
    return declared


def _secret(value: str, number: int, earlier: int, hook: str) -> str:
    if len(value) < MIN_SECRET_LENGTH:
        raise HookFailed(hook, f"line {number} of WODMAIL_VARS_FILE: a {SECRET_KEY} of "
                               f"{len(value)} characters cannot be masked (it needs at least "
                               f"{MIN_SECRET_LENGTH})")
    if earlier >= MAX_SECRETS:
        raise HookFailed(hook, f"line {number} of WODMAIL_VARS_FILE: more than {MAX_SECRETS} "
                               f"{SECRET_KEY} lines")
    return value


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


# `ansible-vault encrypt_string ... --name VAR` (how stock create scripts store a per-student
# variable), and `echo VAR=... >> $WODMAIL_VARS_FILE`; continuation lines joined first.
_VAULTED = re.compile(
    r"ansible-vault\s+encrypt_string\b[^\n]*?--name[=\s]+['\"]?([A-Za-z_][A-Za-z0-9_]*)"
)
_VARS_FILE_LINE = re.compile(
    r"\b(?:echo|printf)\s+['\"]?([A-Za-z_][A-Za-z0-9_]*)=[^\n]*>>?\s*['\"]?\$\{?WODMAIL_VARS_FILE"
)


def scripted_variables(script: Path) -> list[str]:
    """The per-student variables a legacy script visibly stores, read from its text."""
    try:
        text = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    text = text.replace("\\\n", " ")
    found = _VAULTED.findall(text) + _VARS_FILE_LINE.findall(text)
    return list(dict.fromkeys(found))
