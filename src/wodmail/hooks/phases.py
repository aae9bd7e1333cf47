"""The hooks of a deployment, run phase by phase: handler modules, then legacy scripts.

For a workshop folder WS, one phase runs, in this order, whichever of these exist: the
public handler module's function, the public script, the private handler module's
function, the private script (see `wodmail.hooks` for the contract they follow).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from wodmail.errors import ApplianceCommandFailed, ConfigurationError, HookFailed, TransientError
from wodmail.hooks._loader import PUBLIC_HANDLERS, Handler, handler_failure, load_handlers
from wodmail.hooks._process import Finished, Workspace, base_env, hook_workspace, start_process
from wodmail.hooks._scripts import (
    Declared,
    check_startable,
    executable_script,
    ignored_script,
    ignored_scripts,
    read_declared,
    script_vars,
    scripted_variables,
)
from wodmail.hooks.context import DEFAULT_TIMEOUT, PHASES, HookContext, HookFunction
from wodmail.hooks.scriptenv import ScriptShell, script_shell
from wodmail.logs import scrub_text

if TYPE_CHECKING:
    from wodmail.config import Config


class HookRun(BaseModel):
    """One hook that ran: what, how long, and what it printed."""

    name: str
    ms: int
    ok: bool
    output: str = ""
    user: str = ""
    """Who a script ran as (empty for handler modules)."""
    skipped: str = ""
    """Why this hook did not run (a stock script a module replaces, or the reverse)."""


@dataclass(frozen=True)
class _Step:
    name: str
    function: HookFunction | None = None
    script: Path | None = None
    skipped: str = ""


class Hooks:
    """The hooks of a deployment: handler modules (loaded once) and script folders."""

    def __init__(
        self,
        *,
        public: Mapping[str, Handler],
        private: Mapping[str, Handler],
        public_scripts: Path | None,
        private_scripts: Path | None,
        timeout: float,
        shell: ScriptShell | None = None,
        use_scripts: Iterable[str] = (),
    ) -> None:
        self._sides = ((public, public_scripts), (private, private_scripts))
        self._timeout = timeout
        self.shell = shell or ScriptShell()
        self._use_scripts = frozenset(use_scripts)

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
        use_scripts: Iterable[str] = (),
    ) -> Hooks:
        """Import the handler modules; ConfigurationError names the first bad one.

        `public_handlers` is a package name (normally `PUBLIC_HANDLERS`) or a folder;
        `private_handlers` is a folder. Script folders are looked into at each run, as
        admins add scripts without restarting anything; a missing one holds no scripts.
        """
        if timeout <= 0:
            raise ConfigurationError(f"hook timeout must be positive, got {timeout}")
        return cls(
            public=load_handlers(public_handlers),
            private=load_handlers(private_handlers),
            public_scripts=public_scripts,
            private_scripts=private_scripts,
            timeout=timeout,
            shell=shell,
            use_scripts=use_scripts,
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
        shell.check_sourced()
        return cls.load(
            public_handlers=public_handlers,
            private_handlers=config.handlers.private,
            public_scripts=config.scripts.public,
            private_scripts=config.scripts.private,
            timeout=config.scripts.timeout_seconds,
            shell=shell,
            use_scripts=config.hooks.use_scripts,
        )

    def provided(self, content: str) -> dict[str, str]:
        """The per-student variables the CREATE hooks of `content` set, and which hook: the
        names handler modules declare (`PROVIDES`) and those their scripts visibly store."""
        found: dict[str, str] = {}
        for public, (handlers, scripts) in zip((True, False), self._sides, strict=True):
            handler = handlers.get(content)
            if handler is not None and not self._module_replaced(public, content):
                for name in handler.provides:
                    found.setdefault(name, f"module {handler.origin}")
            for phase in ("create", "post_copy"):
                script = executable_script(scripts, phase, content)
                if script is not None and not self._script_replaced(public, handler, phase,
                                                                    content):
                    for name in scripted_variables(script):
                        found.setdefault(name, f"script {script}")
        return found

    def images(self, content: str) -> tuple[str, ...]:
        """The images the appliance of `content` must hold, as its modules declare them."""
        found: list[str] = []
        for public, (handlers, _) in zip((True, False), self._sides, strict=True):
            handler = handlers.get(content)
            if handler is not None and not self._module_replaced(public, content):
                found.extend(image for image in handler.images if image not in found)
        return tuple(found)

    def has(self, phase: str, content: str) -> bool:
        """Whether any module function or executable script runs for `phase` of `content`."""
        return any(not step.skipped for step in self._steps(phase, content))

    def preflight(self, phases: Sequence[str], content: str) -> list[str]:
        """Before an order changes anything: each script that will run can be started.

        ConfigurationError naming the script when it has no `#!` line (and is no binary) or
        its interpreter is missing. Returns warnings for scripts that will be skipped
        because they are not executable (as the procmail API's `-x` tests skipped them).
        """
        warnings = []
        for phase in phases:
            for step in self._steps(phase, content):
                if step.script is not None and not step.skipped:
                    check_startable(step.script)
                    self.shell.check_reachable(step.script)
                    self.shell.check_sourced()
            for _, folder in self._sides:
                ignored = ignored_script(folder, phase, content)
                if ignored is not None:
                    warnings.append(f"{ignored} is not executable: skipped")
        return warnings

    async def run(self, phase: str, ctx: HookContext) -> list[HookRun]:
        """Run every hook of `phase` for `ctx.content`, in order; HookFailed on the first failure.

        Per-student variables the hooks set end up in `ctx.student_vars`. Secrets a hook
        declared (`ctx.secret`, WODMAIL_SECRET) are masked in the output and the failure.
        """
        runs: list[HookRun] = []
        for step in self._steps(phase, ctx.content):
            if step.skipped:
                runs.append(HookRun(name=step.name, ms=0, ok=True, skipped=step.skipped))
                continue
            started = time.monotonic()
            try:
                output = await self._run_step(step, ctx)
            except HookFailed as exc:
                masked = HookFailed(exc.hook, scrub_text(exc.message),
                                    output=scrub_text(exc.output))
                ctx.log.warning("hook failed", hook=step.name, error=str(masked), ms=_ms(started))
                raise masked from None
            user = self.shell.label if step.script is not None else ""
            run = HookRun(name=step.name, ms=_ms(started), ok=True, output=output, user=user)
            ctx.log.info("hook done", hook=run.name, ms=run.ms)
            runs.append(run)
            runs.extend(appliance_runs(ctx))
        return runs

    def _steps(self, phase: str, content: str) -> list[_Step]:
        if phase not in PHASES:
            raise ValueError(f"unknown hook phase {phase!r}; expected one of {PHASES}")
        steps: list[_Step] = []
        for public, (handlers, scripts) in zip((True, False), self._sides, strict=True):
            handler = handlers.get(content)
            function = handler.function(phase) if handler else None
            if handler and function:
                name = f"module {handler.origin}:{phase}"
                skipped = ""
                if self._module_replaced(public, content):
                    skipped = f"not run: hooks.use_scripts names {content}"
                steps.append(_Step(name, function=function, skipped=skipped))
            script = executable_script(scripts, phase, content)
            if script:
                skipped = ""
                if handler and self._script_replaced(public, handler, phase, content):
                    skipped = (f"not run: module {handler.origin} does {phase} "
                               f"(hooks.use_scripts: [{content}] runs this script instead)")
                steps.append(_Step(f"script {script}", script=script, skipped=skipped))
        return steps

    def _module_replaced(self, public: bool, content: str) -> bool:
        """Public modules give way to the stock scripts of the workshops in use_scripts."""
        return public and content in self._use_scripts

    def _script_replaced(
        self, public: bool, handler: Handler | None, phase: str, content: str
    ) -> bool:
        """A public stock script does not run where the public module covers its phase."""
        if not public or handler is None or content in self._use_scripts:
            return False
        return handler.function(phase) is not None

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
        except ApplianceCommandFailed as exc:  # what the command said, not a traceback
            raise HookFailed(name, str(exc), output=exc.output) from exc
        except TimeoutError as exc:
            if deadline.expired():
                raise HookFailed(name, f"timed out after {self._timeout:g} s") from exc
            raise handler_failure(name, exc) from exc
        except Exception as exc:
            raise handler_failure(name, exc) from exc

    async def _run_script(self, name: str, script: Path, ctx: HookContext) -> str:
        with hook_workspace(self.shell.user) as workspace:
            finished = await self._start_script(name, script, ctx, workspace)
            try:
                declared = read_declared(workspace, name)
            except HookFailed as exc:
                declared, unreadable = Declared(), exc
            else:
                unreadable = None
        # The secrets first: they are masked from the output of a failed script too.
        for secret in declared.secrets:
            ctx.secret(secret)
        output = scrub_text(finished.output)
        if finished.status != 0:
            raise HookFailed(name, finished.failure(self._timeout), output=output)
        if unreadable is not None:
            raise HookFailed(name, unreadable.message, output=output)
        ctx.student_vars.update(declared.values)
        return output

    async def _start_script(
        self, name: str, script: Path, ctx: HookContext, workspace: Workspace
    ) -> Finished:
        shell = self.shell
        try:
            with shell.launch(script) as (argv, fds):
                return await start_process(
                    name,
                    argv,
                    env=shell.env(base_env(), script_vars(ctx, workspace.vars_file)),
                    cwd=script.parent,
                    kill_after=self._timeout,
                    workspace=workspace,
                    user=shell.user,
                    pass_fds=fds,
                )
        except ConfigurationError as exc:  # wod.sh or wod-private.sh refused (UnsafeFile)
            raise HookFailed(name, str(exc)) from exc


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
        for script in ignored_scripts(folder):
            problems.append(f"{script} is not executable: it will be ignored")
    return problems


def appliance_runs(ctx: HookContext) -> list[HookRun]:
    """The appliance calls of a hook (`appliance <address>: <command>`), as hook runs: shown
    after the hook that made them, in the order they were made. Masked again: a call may
    print a token the hook declares secret only once it has read it (`ctx.secret`)."""
    return [HookRun(name=scrub_text(call.name), ms=call.ms, ok=call.ok,
                    output=scrub_text(call.output))
            for call in ctx.take_appliance_calls()]


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
