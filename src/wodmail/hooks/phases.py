"""Workshop hooks: Python handler modules and the legacy shell scripts of WoD backends.

A hook runs at one of four phases: `create` (CREATE, before the notebooks are deployed),
`post_copy` (CREATE, after), `cleanup` (CLEANUP) and `reset` (RESET). For a workshop
folder WS, one phase runs, in this order, whichever of these exist:

1. the public handler module's function (modules of the package `wodmail.workshops`,
   the repository's top-level `workshops/` folder);
2. the public script `<phase>-<WS>.sh` (`post-copy-<WS>.sh` for post_copy);
3. the private handler module's function (`.py` files of `handlers.private`);
4. the private script.

Public before private, as the procmail API did; within a side the module runs before the
script. The first failure stops the phase (the procmail API ran under `set -e`).

Handler modules declare `WORKSHOPS = ("WKSHP-Docker101", ...)` (content folder names: a
challenge `CHLG-x` uses the module of `WKSHP-x`) and define any of `async def create(ctx)`,
`post_copy(ctx)`, `cleanup(ctx)`, `reset(ctx)` taking a `HookContext`. Files whose name
starts with `_` are helpers, not handlers. Two modules of one folder claiming the same
workshop, a module that fails to import or a hook that is not `async` is a configuration
error, reported when the hook set is loaded (daemon start, `check`). A handler that
raises fails the order with `HookFailed` naming the module, except `TransientError`,
which passes through so the dispatcher can retry.

Legacy scripts run only when present and executable, with the script's folder as working
directory, stdin from /dev/null, stdout and stderr captured together (the last 64 KiB are
kept), in their own process group, which is killed when the hook times out. Exiting
non-zero fails the order with the output kept. Scripts left running in the background
after the script itself exits are not waited for.

A script's environment is not the daemon's (which may hold secrets): it is PATH, HOME and
LANG from the daemon, USER and LOGNAME of the account the daemon runs as (the stock
`create-appliance.sh` uses `$USER`), and the procmail API's variables: `stdid` (N; for a
RESET range, its first student, as the procmail API left it), `w` (W), `ws` (WS), `wid`
(the API-DB workshop id, when known), `stddir` (HOME), `randompw` (only when a password
was generated), `WODRTARGET` (only when the workshop has an appliance), and one addition:

`WODMAIL_VARS_FILE`: an empty file the script may write `KEY=VALUE` lines to (blank lines
and `#` comments allowed, quotes around a value removed). They become per-student template
variables for this student and workshop, like `ctx.student_vars` of a handler module: the
procmail API's scripts used to ansible-vault them into `pass/variables_<W>_<stdid>.yml`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import pwd
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel

from wodmail.errors import ConfigurationError, HookFailed, TransientError
from wodmail.hooks.scriptenv import ScriptShell, ScriptUser, script_shell
from wodmail.logs import scrub_text

if TYPE_CHECKING:
    from wodmail.config import Config

PHASES = ("create", "post_copy", "cleanup", "reset")
PUBLIC_HANDLERS = "wodmail.workshops"
OUTPUT_CAP = 64 * 1024
INHERITED_ENV = ("PATH", "HOME", "LANG")
DEFAULT_TIMEOUT = 300.0

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")

HookFunction = Callable[["HookContext"], Awaitable[None]]


@dataclass
class HookContext:
    """What a hook knows about the order it runs for; `student_vars` is what it may write."""

    student: int | None
    """N; None for a RESET range (see `students`)."""
    workshop: str
    """W as ordered: `WKSHP-x` or `CHLG-x`."""
    content: str
    """WS, the content folder (`CHLG-` mapped to `WKSHP-`)."""
    students: list[int] = field(default_factory=list)
    """Every student the order covers: [N], or MIN..MAX for a RESET range."""
    workshop_id: int | None = None
    """The workshop's API-DB id (None when only a local wod.yml describes it)."""
    record: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The workshop record: flags, `range` ([min, max]), ..."""
    password: str | None = field(default=None, repr=False)
    """The password generated for `student` by this order, if any."""
    target: str | None = None
    """WODRTARGET, the appliance of this student, or None without an appliance."""
    home: Path | None = None
    """HOME of `student`."""
    homes: dict[int, Path] = field(default_factory=dict)
    """HOME of every student in `students`."""
    variables: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The backend's template variables (read-only; values may be unexpanded templates)."""
    student_vars: dict[str, Any] = field(default_factory=dict)
    """Per-student template variables a hook sets (e.g. HTTPPORT); persisted by the order."""
    resolve: Callable[[str], Any] | None = field(default=None, repr=False)
    """Returns a variable with its templates expanded; KeyError when unset."""
    exports: Mapping[str, str] = field(default_factory=dict, repr=False)
    """More variables procmail-action.sh exported to scripts (accessToken, WODAPIDBEXTURL)."""
    log: Any = field(default_factory=lambda: structlog.get_logger(__name__), repr=False)
    """A structlog logger bound to the order."""

    def __post_init__(self) -> None:
        if not self.students and self.student is not None:
            self.students = [self.student]

    @property
    def range_min(self) -> int | None:
        """The first student of the workshop's range (`range[0]` of its record), if set."""
        span = self.record.get("range")
        if not span:
            if self.record.get("range_error"):
                raise ConfigurationError(f"workshop {self.content}: {self.record['range_error']}")
            return None
        try:
            return int(span[0])
        except (TypeError, ValueError, IndexError):
            raise ConfigurationError(
                f"workshop {self.content}: range {span!r} is not [min, max]"
            ) from None

    def variable(self, key: str) -> Any:
        """The value of template variable `key`, expanded; ConfigurationError when unset."""
        lookup = self.resolve or self.variables.__getitem__
        try:
            return lookup(key)
        except KeyError:
            raise ConfigurationError(
                f"{key} is not set in the configuration variables, and the {self.content} "
                f"hooks need it"
            ) from None

    async def run(
        self,
        *argv: str | os.PathLike[str],
        kill_after: float = DEFAULT_TIMEOUT,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Run a command (no shell) and return its stdout+stderr.

        The command gets PATH/HOME/LANG/USER/LOGNAME plus `env`, never the daemon's whole
        environment. Its process group is killed after `kill_after` seconds. A non-zero exit
        or the time limit raises HookFailed with the output.
        """
        name = f"command {os.fspath(argv[0])}"
        with _scratch() as scratch:
            finished = await _run_checked(
                name,
                [os.fspath(arg) for arg in argv],
                env={**_base_env(), **(env or {})},
                cwd=cwd,
                kill_after=kill_after,
                scratch=scratch,
            )
        return finished.output


class HookRun(BaseModel):
    """One hook that ran: what, how long, and what it printed."""

    name: str
    ms: int
    ok: bool
    output: str = ""
    user: str = ""
    """Who a script ran as (empty for handler modules)."""


@dataclass(frozen=True)
class _Handler:
    origin: str
    """The module's dotted name (public package) or file path (folder), for messages."""
    file: str
    module: ModuleType
    workshops: tuple[str, ...]

    def function(self, phase: str) -> HookFunction | None:
        return getattr(self.module, phase, None)


@dataclass(frozen=True)
class _Step:
    name: str
    function: HookFunction | None = None
    script: Path | None = None


class Hooks:
    """The hooks of a deployment: handler modules (loaded once) and script folders."""

    def __init__(
        self,
        *,
        public: Mapping[str, _Handler],
        private: Mapping[str, _Handler],
        public_scripts: Path | None,
        private_scripts: Path | None,
        timeout: float,
        shell: ScriptShell | None = None,
    ) -> None:
        self._sides = ((public, public_scripts), (private, private_scripts))
        self._timeout = timeout
        self.shell = shell or ScriptShell()

    @classmethod
    def load(
        cls,
        *,
        public_handlers: str | Path | None = None,
        private_handlers: Path | None = None,
        public_scripts: Path | None = None,
        private_scripts: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        shell: ScriptShell | None = None,
    ) -> Hooks:
        """Import the handler modules; ConfigurationError names the first bad one.

        `public_handlers` is a package name (normally `PUBLIC_HANDLERS`) or a folder;
        `private_handlers` is a folder. Script folders are looked into at each run, as
        admins add scripts without restarting anything; a missing one holds no scripts.
        """
        if timeout <= 0:
            raise ConfigurationError(f"hook timeout must be positive, got {timeout}")
        return cls(
            public=_load_handlers(public_handlers),
            private=_load_handlers(private_handlers),
            public_scripts=public_scripts,
            private_scripts=private_scripts,
            timeout=timeout,
            shell=shell,
        )

    @classmethod
    def from_config(
        cls, config: Config, *, public_handlers: str | Path | None = PUBLIC_HANDLERS
    ) -> Hooks:
        """The hook set of `config`: `handlers.private`, `scripts.*`, the public package;
        scripts run as `scripts.run_as` (default `accounts.admin_user`, WODUSER) with the
        installation's wod.sh and wod-private.sh sourced (see `wodmail.hooks.scriptenv`)."""
        installation = config.wod_installation
        run_as = config.scripts.run_as
        shell = script_shell(
            config.accounts.admin_user if run_as is None else run_as,
            config.accounts.root,
            installation.wod_sh if installation else None,
            installation.private_sh if installation else None,
        )
        return cls.load(
            public_handlers=public_handlers,
            private_handlers=config.handlers.private,
            public_scripts=config.scripts.public,
            private_scripts=config.scripts.private,
            timeout=config.scripts.timeout_seconds,
            shell=shell,
        )

    def has(self, phase: str, content: str) -> bool:
        """Whether any module function or executable script exists for `phase` of `content`."""
        return bool(self._steps(phase, content))

    def preflight(self, phases: Sequence[str], content: str) -> list[str]:
        """Before an order changes anything: each script that will run can be started.

        ConfigurationError naming the script when it has no `#!` line (and is no binary) or
        its interpreter is missing. Returns warnings for scripts that will be skipped
        because they are not executable (as the procmail API's `-x` tests skipped them).
        """
        warnings = []
        for phase in phases:
            for step in self._steps(phase, content):
                if step.script is not None:
                    _check_startable(step.script)
                    self.shell.check_reachable(step.script)
            for _, folder in self._sides:
                ignored = _ignored_script(folder, phase, content)
                if ignored is not None:
                    warnings.append(f"{ignored} is not executable: skipped")
        return warnings

    async def run(self, phase: str, ctx: HookContext) -> list[HookRun]:
        """Run every hook of `phase` for `ctx.content`, in order; HookFailed on the first failure.

        Per-student variables the hooks set end up in `ctx.student_vars`.
        """
        runs: list[HookRun] = []
        for step in self._steps(phase, ctx.content):
            started = time.monotonic()
            try:
                output = await self._run_step(step, ctx)
            except HookFailed as exc:
                ctx.log.warning("hook failed", hook=step.name, error=str(exc), ms=_ms(started))
                raise
            user = self.shell.label if step.script is not None else ""
            run = HookRun(name=step.name, ms=_ms(started), ok=True, output=output, user=user)
            ctx.log.info("hook done", hook=run.name, ms=run.ms)
            runs.append(run)
        return runs

    def _steps(self, phase: str, content: str) -> list[_Step]:
        if phase not in PHASES:
            raise ValueError(f"unknown hook phase {phase!r}; expected one of {PHASES}")
        steps: list[_Step] = []
        for handlers, scripts in self._sides:
            handler = handlers.get(content)
            function = handler.function(phase) if handler else None
            if handler and function:
                steps.append(_Step(f"module {handler.origin}:{phase}", function=function))
            script = _executable_script(scripts, phase, content)
            if script:
                steps.append(_Step(f"script {script}", script=script))
        return steps

    async def _run_step(self, step: _Step, ctx: HookContext) -> str:
        if step.function is not None:
            await self._run_function(step.name, step.function, ctx)
            return ""
        assert step.script is not None
        return await self._run_script(step.name, step.script, ctx)

    async def _run_function(self, name: str, function: HookFunction, ctx: HookContext) -> None:
        deadline = asyncio.timeout(self._timeout)
        try:
            async with deadline:
                await function(ctx)
        except TransientError:
            raise
        except HookFailed as exc:
            raise HookFailed(name, str(exc), output=exc.output) from exc
        except TimeoutError as exc:
            if deadline.expired():
                raise HookFailed(name, f"timed out after {self._timeout:g} s") from exc
            raise _handler_failure(name, exc) from exc
        except Exception as exc:
            raise _handler_failure(name, exc) from exc

    async def _run_script(self, name: str, script: Path, ctx: HookContext) -> str:
        with _scratch() as scratch:
            vars_file = _empty_file(scratch / "vars")
            self.shell.prepare(scratch, [vars_file])
            finished = await _run_checked(
                name,
                self.shell.argv(script),
                env=self.shell.env(_base_env(), _script_vars(ctx, vars_file)),
                cwd=script.parent,
                kill_after=self._timeout,
                scratch=scratch,
                user=self.shell.user,
            )
            ctx.student_vars.update(_read_vars(vars_file, name))
        return finished.output


def check(config: Config, *, public_handlers: str | Path | None = PUBLIC_HANDLERS) -> list[str]:
    """Problems with the hooks of `config`, for `wodmail check-config`; empty when fine.

    When the handler modules fail to load, that error (fatal: the daemon won't start) is
    the only entry; otherwise the entries are warnings about script folders and scripts.
    """
    try:
        hooks = Hooks.from_config(config, public_handlers=public_handlers)
    except ConfigurationError as exc:
        return [str(exc)]
    problems = []
    if hooks.shell.not_switched:
        problems.append(f"legacy hook scripts run as {hooks.shell.label}")
    for label, folder in (("public", config.scripts.public), ("private", config.scripts.private)):
        if folder is not None and not folder.is_dir():
            problems.append(f"{label} scripts folder {folder} does not exist")
        for script in _ignored_scripts(folder):
            problems.append(f"{script} is not executable: it will be ignored")
    return problems


# --- handler modules -------------------------------------------------------------------


def _load_handlers(source: str | Path | None) -> dict[str, _Handler]:
    if source is None:
        return {}
    modules = _folder_modules(source) if isinstance(source, Path) else _package_modules(source)
    handlers: dict[str, _Handler] = {}
    for handler in modules:
        for workshop in handler.workshops:
            other = handlers.get(workshop)
            if other is not None:
                raise ConfigurationError(
                    f"{workshop} is claimed by two handler modules: {other.file} and "
                    f"{handler.file}; keep one"
                )
            handlers[workshop] = handler
    return handlers


def _package_modules(package: str) -> Iterator[_Handler]:
    try:
        parent = importlib.import_module(package)
    except Exception as exc:
        raise ConfigurationError(
            f"handler package {package} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    infos = sorted(pkgutil.iter_modules(parent.__path__), key=lambda info: info.name)
    for info in infos:
        if info.name.startswith("_"):
            continue
        dotted = f"{package}.{info.name}"
        spec = importlib.util.find_spec(dotted)
        file = spec.origin if spec and spec.origin else dotted
        module = _imported(file, lambda dotted=dotted: importlib.import_module(dotted))
        yield _handler(module, origin=dotted, file=file)


def _folder_modules(folder: Path) -> Iterator[_Handler]:
    if not folder.is_dir():
        raise ConfigurationError(f"handler folder {folder} does not exist or is not a folder")
    # One private namespace per folder, so two folders may both hold a docker101.py.
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    for file in sorted(folder.glob("*.py")):
        if file.name.startswith("_"):
            continue
        unique = f"_wodmail_handlers_{tag}_{file.stem}"
        module = _imported(str(file), lambda file=file, unique=unique: _exec_file(file, unique))
        yield _handler(module, origin=str(file), file=str(file))


def _exec_file(file: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"no loader for {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _imported(file: str, load: Callable[[], ModuleType]) -> ModuleType:
    try:
        return load()
    except Exception as exc:
        raise ConfigurationError(
            f"handler module {file} failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def _handler(module: ModuleType, *, origin: str, file: str) -> _Handler:
    declared = getattr(module, "WORKSHOPS", None)
    if (
        not isinstance(declared, tuple | list)
        or not declared
        or not all(isinstance(name, str) and name for name in declared)
    ):
        raise ConfigurationError(
            f"handler module {file} must declare WORKSHOPS as a tuple of workshop folder "
            f'names, e.g. WORKSHOPS = ("WKSHP-Docker101",); got {declared!r} '
            f"(helper files belong in names starting with '_')"
        )
    for name in declared:
        if name.startswith("CHLG-"):
            raise ConfigurationError(
                f"handler module {file} claims {name}: claim its content folder "
                f"WKSHP-{name.removeprefix('CHLG-')}, which challenges share"
            )
    for phase in PHASES:
        function = getattr(module, phase, None)
        if function is not None and not inspect.iscoroutinefunction(function):
            raise ConfigurationError(
                f"handler module {file}: {phase} must be an async function (async def)"
            )
    return _Handler(origin=origin, file=file, module=module, workshops=tuple(declared))


def _handler_failure(name: str, exc: BaseException) -> HookFailed:
    trace = "".join(traceback.format_exception(exc))
    return HookFailed(name, f"{type(exc).__name__}: {exc}", output=_cap_text(trace))


# --- legacy scripts --------------------------------------------------------------------


def _script_name(phase: str, content: str) -> str:
    return f"{phase.replace('_', '-')}-{content}.sh"


def _executable_script(folder: Path | None, phase: str, content: str) -> Path | None:
    if folder is None:
        return None
    script = folder / _script_name(phase, content)
    if script.is_file() and os.access(script, os.X_OK):
        return script
    return None


def _ignored_script(folder: Path | None, phase: str, content: str) -> Path | None:
    if folder is None:
        return None
    script = folder / _script_name(phase, content)
    return script if script.is_file() and not os.access(script, os.X_OK) else None


def _check_startable(script: Path) -> None:
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


def _ignored_scripts(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    prefixes = tuple(f"{phase.replace('_', '-')}-" for phase in PHASES)
    return sorted(
        path
        for path in folder.glob("*.sh")
        if path.name.startswith(prefixes) and path.is_file() and not os.access(path, os.X_OK)
    )


def _base_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env.setdefault("PATH", os.defpath)
    account = pwd.getpwuid(os.geteuid())
    env.setdefault("HOME", account.pw_dir)
    env["USER"] = env["LOGNAME"] = account.pw_name
    return env


def _script_vars(ctx: HookContext, vars_file: Path) -> dict[str, str]:
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


def _read_vars(path: Path, hook: str) -> dict[str, str]:
    values: dict[str, str] = {}
    text = path.read_text(encoding="utf-8", errors="replace")
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
        values[key] = _unquoted(value.strip())
    return values


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


# --- running a process -----------------------------------------------------------------


@dataclass(frozen=True)
class _Finished:
    status: int | None
    """The exit status (negative: killed by that signal); None when it timed out."""
    output: str


async def _run_checked(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    kill_after: float,
    scratch: Path,
    user: ScriptUser | None = None,
) -> _Finished:
    try:
        finished = await _run_process(
            argv, env=env, cwd=cwd, kill_after=kill_after, scratch=scratch, user=user
        )
    except OSError as exc:
        raise HookFailed(name, f"could not start: {exc}") from exc
    if finished.status is None:
        raise HookFailed(name, f"timed out after {kill_after:g} s", output=finished.output)
    if finished.status != 0:
        raise HookFailed(name, _status_text(finished.status), output=finished.output)
    return finished


async def _run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    kill_after: float,
    scratch: Path,
    user: ScriptUser | None = None,
) -> _Finished:
    identity: dict[str, Any] = {}
    if user is not None:
        identity = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}
    # Output goes to a file, not a pipe: a background child keeping a pipe open would
    # otherwise hold up the wait for the script itself.
    output_path = scratch / "output"
    sink = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            **identity,
        )
    finally:
        os.close(sink)
    status: int | None
    try:
        async with asyncio.timeout(kill_after):
            status = await process.wait()
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        status = None
    except BaseException:
        _kill_group(process.pid)
        raise
    return _Finished(status=status, output=_tail(output_path))


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _status_text(status: int) -> str:
    if status < 0:
        try:
            return f"killed by signal {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


def _tail(path: Path) -> str:
    with path.open("rb") as stream:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(max(0, size - OUTPUT_CAP))
        data = stream.read()
    # Stock scripts run under `set -x`: tokens and passwords would show in their output.
    text = scrub_text(data.decode("utf-8", errors="replace"))
    if size > OUTPUT_CAP:
        return f"[... first {size - OUTPUT_CAP} bytes left out ...]\n{text}"
    return text


def _cap_text(text: str) -> str:
    return text if len(text) <= OUTPUT_CAP else text[-OUTPUT_CAP:]


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wodmail-hook-") as folder:
        yield Path(folder)


def _empty_file(path: Path) -> Path:
    path.touch(mode=0o600)
    return path


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
