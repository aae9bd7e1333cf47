"""`HookContext`: what a workshop hook is given about the order it runs for."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from wodmail.appliances import Appliance, ApplianceCall, AppliancePool
from wodmail.errors import ConfigurationError
from wodmail.hooks._process import base_env, hook_workspace, run_checked
from wodmail.logs import MIN_SECRET_LENGTH, register_secret

PHASES = ("create", "post_copy", "cleanup", "reset")
DEFAULT_TIMEOUT = 300.0

HookFunction = Callable[["HookContext"], Awaitable[None]]


@dataclass
class HookContext:
    """What a hook knows about the order it runs for; `student_vars` is what it may write."""

    student: int | None
    """N. A RESET range runs the reset hooks once per student, as procmail-action.sh did."""
    workshop: str
    """W as ordered: `WKSHP-x` or `CHLG-x`."""
    content: str
    """WS, the content folder (`CHLG-` mapped to `WKSHP-`)."""
    students: list[int] = field(default_factory=list)
    """[N]: the students this run of the hooks is for."""
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
    container_network: str = "published"
    """`appliances.container_network`: "published" (containers publish their ports, as in
    production) or "host" (they share the appliance's network: no bridge there)."""
    privileged_containers: bool = True
    """`appliances.privileged_containers`: whether containers the stock compose files made
    privileged (Docker-in-Docker) may be."""
    ready_seconds: float = 120.0
    """`appliances.ready_seconds`: how long a student's container may take to answer."""
    completion: int | None = None
    """A cleanup hook that measured the completion ratio itself (e.g. from the notebooks in
    the student's container: `ComposeProject.completion`) sets it; the CLEANUP then reports
    this figure instead of measuring HOME/WS."""
    exports: Mapping[str, str] = field(default_factory=dict, repr=False)
    """More variables procmail-action.sh exported to scripts (accessToken, WODAPIDBEXTURL)."""
    log: Any = field(default_factory=lambda: structlog.get_logger(__name__), repr=False)
    """A structlog logger bound to the order."""
    appliances: AppliancePool | None = field(default=None, repr=False)
    """The daemon's appliance connections (use `appliance()`)."""
    appliance_calls: list[ApplianceCall] = field(default_factory=list, repr=False)
    """What `appliance()` calls did, not yet shown among the order's hooks."""

    def appliance(self, address: str | None = None) -> Appliance:
        """The appliance at `address` (default: `target`, this student's WODRTARGET), over
        a connection the daemon keeps. ConfigurationError when the workshop has none."""
        address = address or self.target
        if not address:
            raise ConfigurationError(
                f"workshop {self.content} has no appliance (its record sets neither "
                f"monoappliance nor multiappliance), and no address was given")
        if self.appliances is None:
            raise ConfigurationError("this hook run has no appliance connections")
        return Appliance(self.appliances, address, record=self.appliance_calls.append,
                         log=self.log)

    def take_appliance_calls(self) -> list[ApplianceCall]:
        """The calls made since the last take (the hook runner shows them after the hook)."""
        calls, self.appliance_calls[:] = list(self.appliance_calls), []
        return calls

    def secret(self, value: str) -> str:
        """Mask `value` from now on, and return it: a token or password the hook fetched or
        made (`token = ctx.secret(await fetch_token())`) then shows as `***` in this order's
        hook output and error, in the logs and in `wodmail show`.

        ValueError for a value of fewer than 4 characters: masking it would garble every
        line it occurs in, so it cannot be kept secret this way (TypeError for a non-string).
        """
        if not isinstance(value, str):
            raise TypeError(f"ctx.secret: expected a string, got {type(value).__name__}")
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(f"ctx.secret: a secret of {len(value)} characters cannot be masked "
                             f"(it needs at least {MIN_SECRET_LENGTH})")
        register_secret(value)
        return value

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
        with hook_workspace(None) as workspace:
            finished = await run_checked(
                name,
                [os.fspath(arg) for arg in argv],
                env={**base_env(), **(env or {})},
                cwd=cwd,
                kill_after=kill_after,
                workspace=workspace,
            )
        return finished.output
