"""The four verbs, as the old procmail API ran them, as named steps over the backend's ports.

Resume, not redo: an order interrupted (a crash, a SIGKILL, a failed step retried later) runs
again through its verb, but each step whose effect a participant or a peer can see is run
`once`: its completion is committed to the order's record before the order goes on, and a
re-run skips it (see `steps.Steps`). Only what is safe is repeated: lookups that change
nothing, and work nobody can see yet. Each verb below lists its steps and why each is
repeated or not. A password is drawn once and saved in the record before it is used, so
accounts, portal and result agree whatever was done before.

Portal flags set once in the participant's view (`active`, `cleaned`) are, on a re-run that
has no record of them and on a retry of the same step, first read back from the portal: a
crash between the PUT and its record, or an answer lost after the portal acted on it (a
timeout, a truncated reply), must not send them twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from wodmail.config import Config
from wodmail.dispatch.dispatcher import JobContext
from wodmail.dispatch.steps import RetryPolicy, StepFailed, Steps
from wodmail.errors import (
    ConfigurationError,
    HookFailed,
    TemplateError,
    TransientError,
    WodmailError,
)
from wodmail.hooks import HookContext
from wodmail.hooks.phases import appliance_runs
from wodmail.host.ratio import completion_ratio
from wodmail.journal.jobs import Job
from wodmail.lifecycle.appliance import appliance_target
from wodmail.lifecycle.backend import Account, Backend
from wodmail.lifecycle.workshop import Workshop, resolve_workshop
from wodmail.logs import register_secret
from wodmail.templating.renderer import Renderer

log = structlog.get_logger(__name__)


class OrderRun:
    """One run of an order: the job, its steps and the ports."""

    def __init__(self, backend: Backend, job: Job, ctx: JobContext) -> None:
        self.backend = backend
        self.job = job
        self.ctx = ctx
        dispatch = backend.config.dispatch
        self.steps = Steps(
            ctx,
            RetryPolicy(
                base_seconds=dispatch.retry_base_seconds,
                max_seconds=dispatch.retry_max_seconds,
                deadline_seconds=dispatch.retry_deadline_seconds,
            ),
        )
        self.result = self.steps.result
        self.result["verb"] = job.verb
        self.customer = job.customer or 0
        self.portal = backend.portal
        self.hub = backend.hub

    async def step(
        self, name: str, action: Callable[[], Awaitable[Any]], *, once: bool = False
    ) -> Any:
        return await self.steps.run(name, action, once=once)

    # -- shared first steps ------------------------------------------------------------------

    async def student(self) -> int:
        """The order's student; for `[object Promise]` orders, the customer's, from the API-DB."""
        if self.job.student is not None:
            return self.job.student
        student = int(await self.step("resolve-student", self._student_of_customer))
        await self.ctx.record_student(student)
        await self.step(f"wait for student{student}'s earlier orders",
                        lambda: self.ctx.hold_student(student))
        return student

    async def _student_of_customer(self) -> int:
        if self.portal is None or not self.customer:
            raise WodmailError("the student is unknown and no portal is configured to ask")
        customer = await self.portal.get_customer(self.customer)
        db_id = customer.get("studentId")
        if db_id is None:
            raise WodmailError(f"customer {self.customer} has no studentId in the API-DB")
        student = int(db_id) - self.backend.config.students.base_id
        students = self.backend.config.students
        if not students.min <= student <= students.max:
            raise WodmailError(
                f"customer {self.customer}'s student {student} is outside "
                f"{students.min}..{students.max}"
            )
        self.result["student"] = student
        return student

    async def workshop(self) -> Workshop:
        job = self.job
        workshop: Workshop = await self.step(
            "workshop",
            lambda: resolve_workshop(
                self.backend.config, job.workshop or "", job.content or "", job.mode or "WKSHP",
                self.portal,
            ),
        )
        self.result["workshop_id"] = workshop.record.id
        self.result["workshop_record"] = workshop.source
        for warning in workshop.warnings:
            log.warning("workshop record", warning=warning)
        if workshop.warnings:
            self.result["warnings"] = list(workshop.warnings)
        return workshop

    async def target(
        self, workshop: Workshop, student: int, *, step: str = "appliance-target"
    ) -> str | None:
        return await self.step(step, lambda: _now(self._target(workshop, student)))

    def _target(self, workshop: Workshop, student: int) -> str | None:
        renderer = Renderer(self.backend.base_vars)
        target = appliance_target(
            multiappliance=workshop.record.multiappliance,
            monoappliance=workshop.record.monoappliance,
            content=workshop.content,
            student=student,
            # An unusable range fails only the orders that need it.
            range_min=workshop.range_min if workshop.record.multiappliance else None,
            lookup=lambda key: resolve(renderer, key),
        )
        if target:
            self.result["target"] = target
        return target

    async def password(self) -> str:
        """A new password, saved in the order's record before use (reused by a re-run)."""
        previous = self.result.get("password")
        if isinstance(previous, str) and previous:
            register_secret(previous)
            password = previous
        else:
            password = self.backend.new_password()
        self.result["password"] = password
        await self.steps.save()
        return password

    async def set_password(self, workshop: Workshop, student: int, password: str) -> None:
        if not (self.backend.config.accounts.linux_passwords or workshop.record.ldap):
            self.steps.skip(f"set-password student{student}",
                            "accounts.linux_passwords is off and the workshop has no ldap")
            return
        where = await self.step(
            f"set-password student{student}",
            lambda: self.backend.set_password(workshop, student, password),
            once=True,
        )
        self.result.setdefault("password_set_on", where)

    # -- hooks -------------------------------------------------------------------------------

    async def hooks(
        self,
        phase: str,
        workshop: Workshop,
        students: list[int],
        *,
        password: str | None = None,
        target: str | None = None,
        once: bool = True,
        step: str | None = None,
    ) -> None:
        backend = self.backend
        if not backend.hooks.has(phase, workshop.content):
            return
        student = students[0] if len(students) == 1 else None
        homes = {n: backend.config.students_dir / f"student{n}" for n in students}
        student_vars = backend.student_vars.load(student, workshop.content) if student else {}
        renderer = Renderer(backend.base_vars)
        ctx = HookContext(
            student=student,
            students=students,
            workshop=workshop.name,
            content=workshop.content,
            workshop_id=workshop.record.id or None,
            record=workshop.record.model_dump(),
            password=password,
            target=target,
            home=homes.get(student) if student else None,
            homes=homes,
            variables=backend.base_vars,
            student_vars=student_vars,
            resolve=lambda key: resolve(renderer, key),
            log=log.bind(phase=phase),
            appliances=backend.appliances,
            container_network=backend.config.appliances.container_network,
            privileged_containers=backend.config.appliances.privileged_containers,
            ready_seconds=backend.config.appliances.ready_seconds,
        )
        async def run_hooks() -> list[dict[str, Any]]:
            ctx.exports = await backend.script_exports()
            shown = self.result.setdefault("hooks", [])
            try:
                runs = [run.model_dump() for run in await backend.hooks.run(phase, ctx)]
            except HookFailed as exc:  # keep what the failing hook said, for `wodmail show`
                shown.append(
                    {"name": exc.hook, "ok": False, "output": exc.output,
                     "user": backend.hooks.shell.label if exc.hook.startswith("script ") else ""})
                shown.extend(run.model_dump() for run in appliance_runs(ctx))
                raise
            except TransientError:  # the appliance calls of a try that will be retried
                shown.extend(run.model_dump() for run in appliance_runs(ctx))
                raise
            shown.extend(runs)
            if ctx.completion is not None:  # measured by a hook, e.g. in the student's container
                self.result["completion_by_hook"] = ctx.completion
            return runs

        await self.step(step or f"hooks {phase}", run_hooks, once=once)
        if student is not None:
            backend.student_vars.save(student, workshop.content, ctx.student_vars)

    # -- portal and hub ----------------------------------------------------------------------

    async def portal_call(self, name: str, action: Callable[[], Awaitable[Any]]) -> None:
        if self.portal is None:
            self.steps.skip(name, "no portal configured")
            return
        await self.step(name, action, once=True)

    async def hub_call(self, name: str, start: bool, student: int) -> None:
        hub = self.hub
        if hub is None:
            self.steps.skip(name, "no hub configured")
            return
        user = f"student{student}"
        call = hub.start_server if start else hub.stop_server
        within = self.backend.config.dispatch.retry_deadline_seconds

        async def run() -> str:
            outcome = await call(user, within=within, pause=self.idle_sleep)
            self.result["hub"] = outcome
            return outcome

        await self.step(name, run, once=True)

    async def hub_preflight(self, student: int) -> None:
        """Before a CREATE changes anything: the hub has the student and may start servers."""
        hub, user = self.hub, f"student{student}"
        if hub is not None:
            await self.step(f"hub check {user}", lambda: hub.preflight(user))

    async def idle_sleep(self, seconds: float) -> None:
        async with self.ctx.idle():
            await asyncio.sleep(seconds)

    async def update_student(self, student: int, **fields: Any) -> None:
        portal = self.portal
        db_id = self.backend.db_id(student)
        shown = ",".join(fields)
        await self.portal_call(
            f"portal student/{db_id} {shown}",
            lambda: portal.update_student(db_id, **fields),  # type: ignore[union-attr]
        )

    async def update_customer(self, *, confirm: bool = False, **fields: Any) -> None:
        """PUT customer/C; with `confirm`, a re-run or a retry in doubt reads the customer first
        and sends nothing if the portal already holds these values (see the module's doc)."""
        if not self.customer:
            return
        portal = self.portal
        shown = ",".join(fields)
        name = f"portal customer/{self.customer} {shown}"

        tries = 0

        async def put() -> str:
            nonlocal tries
            tries += 1
            assert portal is not None
            # An earlier try (this run's, cut off by a timeout or a truncated answer, or a
            # crashed run's) may have reached the portal: read it back before sending again.
            if confirm and (self.ctx.rerun or tries > 1):
                current = await portal.get_customer(self.customer)
                if all(_same(current.get(k), v) for k, v in fields.items()):
                    return "already set"
            await portal.update_customer(self.customer, **fields)
            return "sent"

        await self.portal_call(name, put)

    async def wait_cleaned(self) -> None:
        """RESET/PURGE step 1: wait for the customer's CLEANUP, without holding a worker."""
        if not self.customer or self.portal is None:
            return
        portal = self.portal
        dispatch = self.backend.config.dispatch

        async def until_cleaned() -> None:
            deadline = time.monotonic() + dispatch.cleaned_wait_seconds
            while True:
                try:
                    customer = await portal.get_customer(self.customer)
                except TransientError as exc:  # keep polling until our own deadline
                    log.warning("portal unavailable while waiting for cleaned", error=str(exc))
                    customer = {}
                if str(customer.get("cleaned")).lower() == "true":
                    return
                if time.monotonic() >= deadline:
                    raise WodmailError(
                        f"customer {self.customer} still not cleaned after "
                        f"{dispatch.cleaned_wait_seconds:.0f} s"
                    )
                async with self.ctx.idle():
                    await asyncio.sleep(dispatch.cleaned_poll_seconds)

        await self.step(f"wait customer/{self.customer} cleaned", until_cleaned, once=True)

    # -- homes -------------------------------------------------------------------------------

    async def account(self, student: int) -> Account:
        """The account and its home, checked (and the home repaired) before any change."""
        account: Account = await self.step(
            f"home student{student}", lambda: _now(self.backend.account(student))
        )
        if account.repaired:
            self.result.setdefault("home_repaired", {})[account.name] = list(account.repaired)
        return account

    # -- preflight: what could fail the order after its first destructive step -------------

    async def preflight(self, workshop: Workshop, student: int, phases: tuple[str, ...]) -> None:
        """Hook scripts that will run can start; for CREATE, `compile` scripts exist and the
        templates render (syntax only when a create hook may still add variables)."""
        backend = self.backend

        async def check() -> list[str]:
            warnings = backend.hooks.preflight(phases, workshop.content)
            if "create" in phases:
                backend.check_compile(workshop)
                backend.check_deploy_tools()
            return warnings

        warnings = await self.step("preflight", check)
        if warnings:
            self.result.setdefault("warnings", []).extend(warnings)
        if "create" in phases:
            hooked = backend.hooks.has("create", workshop.content)
            await self.step(
                "check-templates",
                lambda: backend.check_templates(workshop, student, undefined_ok=hooked),
            )

    async def wipe(self, account: Account, *, once: bool = True) -> None:
        await self.step(f"wipe-home {account.name}", lambda: self.backend.reset_home(account),
                        once=once)

    async def end_processes(self, account: Account) -> None:
        async def end() -> int:
            count = await self.backend.end_processes(account)
            if count:
                self.result.setdefault("processes_ended", {})[account.name] = count
            return count

        await self.step(f"end-processes {account.name}", end, once=True)

    async def completion(self, account: Account, workshop: Workshop) -> int:
        """CLEANUP step 3, computed once: a re-run must not read the home the first run wiped."""
        folder = account.home / workshop.content

        async def measure() -> int:
            measured = self.result.get("completion_by_hook")
            if measured is None:
                measured = await asyncio.to_thread(completion_ratio, folder)
            self.result["completion"] = measured
            return int(measured)

        return int(await self.step("completion", measure, once=True))


async def _now(value: Any) -> Any:
    return value


def _same(current: Any, wanted: Any) -> bool:
    """A portal field equals what we would send (the API-DB may store "true" for true)."""
    return str(current).lower() == str(wanted).lower()


def resolve(renderer: Renderer, key: str) -> Any:
    """A configuration variable with its `{{ }}` expanded; KeyError when it is not set."""
    try:
        return renderer.render("{{ hostvars[inventory_hostname][" + repr(key) + "] }}", key)
    except TemplateError as exc:
        raise KeyError(key) from exc


# -- the verbs -------------------------------------------------------------------------------


HOME_READY = "home ready"
"""CREATE's checkpoint: the home is wiped, compiled, hooked and deployed, in one piece."""


async def create(order: OrderRun) -> None:
    """CREATE N C W, resumable:

    - student, workshop, appliance target, home check: repeated (they change nothing but a
      home's wrong owner or mode). Preflight (hooks startable, compile scripts, templates,
      the hub's check): repeated until `home ready`, as it guards that block.
    - password: drawn once, saved in the record before use; a re-run takes the same one.
    - set-password: once (the same password again would be harmless; skipping is cheaper).
    - wipe, compile, create hook, deploy, post-copy hook: one block, recorded as `home ready`
      when all of it is done. Until then nobody was told about the home, so an interrupted
      block is redone from the wipe (a half-deployed home is never kept). Once recorded, never
      again: the participant may be working in it.
    - portal student password: once (idempotent anyway).
    - portal customer active: once; confirmed from the portal on a re-run in doubt, so the
      participant is never told twice.
    - hub start: once. A hub failure after `active` does not fail the order (see
      `start_server_after_active`).
    """
    student = await order.student()
    workshop = await order.workshop()
    target = await order.target(workshop, student)
    account = await order.account(student)
    if not order.steps.passed(HOME_READY):
        await order.preflight(workshop, student, ("create", "post_copy"))
        # Once the home is ready, the hub can only matter after `active`: never fatal then.
        await order.hub_preflight(student)
    password = await order.password()
    await order.set_password(workshop, student, password)
    if not order.steps.passed(HOME_READY):
        await prepare_home(order, workshop, account, password, target)
        await order.steps.mark(HOME_READY)
    await order.update_student(student, password=password)
    await order.update_customer(active=True, confirm=True)
    await start_server_after_active(order, student)


async def prepare_home(
    order: OrderRun, workshop: Workshop, account: Account, password: str, target: str | None
) -> None:
    """CREATE steps 3-7, all repeated until the whole block is done (see `create`)."""
    backend, student = order.backend, account.student
    await order.wipe(account, once=False)
    if workshop.record.compile:
        renderer = backend.renderer(workshop, student, password)
        made = await order.step(
            "compile", lambda: backend.compile_scripts(workshop, account, renderer)
        )
        order.result["compiled"] = made
    await order.hooks("create", workshop, [student], password=password, target=target,
                      once=False)
    task_runs: list[dict[str, Any]] = []
    try:
        deployed = await order.step(
            "deploy",
            lambda: backend.deploy(workshop, account, backend.renderer(workshop, student, password),
                                   password=password, runs=task_runs),
        )
    finally:  # what private templating tasks said, shown with the hooks
        if task_runs:
            order.result.setdefault("hooks", []).extend(task_runs)
    order.result["deployed"] = {"files": deployed.files, "rendered": deployed.rendered,
                                "bytes": deployed.bytes}
    await order.hooks("post_copy", workshop, [student], password=password, target=target,
                      once=False)


async def start_server_after_active(order: OrderRun, student: int) -> None:
    """CREATE step 8's last call. The participant has been told `active`: their home and
    password are ready and JupyterHub starts their server at their first login anyway, so a
    hub that fails here (down past the retry deadline, or refusing the token) leaves the
    order `done`, with the failure in `result.warnings` and an error in the log, rather than
    `failed` while the portal shows the participant as active."""
    try:
        await order.hub_call("hub start", True, student)
    except StepFailed as exc:
        warning = f"{exc} (the participant is active; JupyterHub starts the server at login)"
        order.result.setdefault("warnings", []).append(warning)
        log.error("hub start failed after active", error=str(exc))


async def cleanup(order: OrderRun) -> None:
    """CLEANUP N C W, resumable:

    - student, workshop, target, home lookup: repeated (they change nothing).
    - password: drawn once and saved; set-password and the portal's copy: once.
    - cleanup hook: once (it may remove what a second run would not find).
    - completion ratio: measured once and kept in the record; a re-run never measures the
      home again (the first run may have wiped it: 0 would overwrite the real figure).
    - every portal call and the hub stop: once; `cleaned` confirmed from the portal on a
      re-run in doubt.
    - wipe and end-processes: once (the student is unassigned by then; repeating would only
      cost a new key pair and a kill grace).
    """
    student = await order.student()
    workshop = await order.workshop()
    target = await order.target(workshop, student)
    account = await order.account(student)
    await order.preflight(workshop, student, ("cleanup",))
    password = await order.password()
    await order.set_password(workshop, student, password)
    await order.update_student(student, password=password)
    await order.hooks("cleanup", workshop, [student], password=password, target=target)
    ratio = await order.completion(account, workshop)
    await order.update_customer(completionPercentage=ratio)
    await order.hub_call("hub stop", False, student)
    if workshop.record.reset:
        await order.update_student(student, assigned=True)
        await order.update_customer(active=False)
    else:
        await order.update_student(student, assigned=False)
        await order.wipe(account)
        await order.end_processes(account)
    await order.update_customer(cleaned=True, confirm=True)


async def reset(order: OrderRun) -> None:
    """RESET N|MIN,MAX C W, resumable:

    - waiting for `cleaned`: once (a customer seen cleaned stays so).
    - workshop, students, capacity check, homes, target: repeated (lookups); the capacity PUT
      once.
    - set-password: once per student (each gets a new password nobody is told about; a
      re-run leaves those already changed alone).
    - reset hooks: once per student, as procmail-action.sh's RESET loop ran them: each with
      that student's `stdid`, appliance target and new password (`randompw`), so the reset
      scripts set it on the appliance. A re-run after a student's set-password but before
      its hooks hands the hooks a fresh password: both are unknown to anyone.
    - each portal call, wipe, end-processes: once.
    """
    await order.wait_cleaned()
    workshop = await order.workshop()
    if not workshop.record.reset:
        order.steps.skip("reset", f"{workshop.name} has no `reset` flag: nothing to do")
        return
    students = [await order.student()] if order.job.student is None else order.job.students
    if not order.backend.hooks.has("reset", workshop.content):
        raise WodmailError(f"no reset hook for {workshop.name}")
    accounts = [await order.account(n) for n in students]
    await order.preflight(workshop, students[0], ("reset",))
    if len(students) > 1:
        await _range_capacity(order, workshop, students)
    for account in accounts:
        await _reset_one(order, workshop, account.student, ranged=len(students) > 1)
    for account in accounts:
        await order.update_student(account.student, assigned=False)
        await order.wipe(account)
        await order.end_processes(account)


async def _reset_one(order: OrderRun, workshop: Workshop, student: int, *, ranged: bool) -> None:
    password = order.backend.new_password()
    await order.set_password(workshop, student, password)
    suffix = f" student{student}" if ranged else ""
    target = await order.target(workshop, student, step=f"appliance-target{suffix}")
    await order.hooks("reset", workshop, [student], password=password, target=target,
                      step=f"hooks reset{suffix}")


async def _range_capacity(order: OrderRun, workshop: Workshop, students: list[int]) -> None:
    config = order.backend.config.students
    if students[0] < config.min or students[-1] > config.max:
        raise WodmailError(f"range {students[0]},{students[-1]} outside {config.min}..{config.max}")
    if not workshop.record.id:
        raise WodmailError(f"{workshop.name} has no API-DB id to update its capacity")
    portal = order.portal
    await order.portal_call(
        f"portal workshop/{workshop.record.id} capacity",
        lambda: portal.update_workshop(workshop.record.id, capacity=len(students)),  # type: ignore[union-attr]
    )


async def purge(order: OrderRun) -> None:
    """PURGE N C W, resumable: waiting for `cleaned`, hub stop, set-password, the portal
    call, wipe and end-processes are each done once; lookups are repeated; the password is
    drawn once and saved."""
    await order.wait_cleaned()
    student = await order.student()
    workshop = await order.workshop()
    account = await order.account(student)
    await order.hub_call("hub stop", False, student)
    password = await order.password()
    await order.set_password(workshop, student, password)
    await order.update_student(student, assigned=False, password=password)
    await order.wipe(account)
    await order.end_processes(account)


VERBS: dict[str, Callable[[OrderRun], Awaitable[None]]] = {
    "CREATE": create,
    "CLEANUP": cleanup,
    "RESET": reset,
    "PURGE": purge,
}


class LifecycleRunner:
    """The dispatcher's runner: one `OrderRun` per job, through its verb's steps."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._retired: list[Any] = []  # peer clients replaced by a reload, closed at the end
        backend.start()

    def reconfigure(self, config: Config) -> None:
        """Orders from now on run on a backend built from `config` (a reload); running ones
        finish on theirs. Raises `ConfigurationError`, changing nothing, if it is bad."""
        backend = Backend.from_config(config, previous=self.backend)
        kept = backend.clients()
        self._retired.extend(c for c in self.backend.clients() if c not in kept)
        self.backend = backend

    async def __call__(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        verb = VERBS.get(job.verb or "")
        if verb is None:
            raise ConfigurationError(f"unknown verb {job.verb!r}")
        order = OrderRun(self.backend, job, ctx)
        try:
            await verb(order)
        except Exception as exc:
            # The dispatcher records what was done before the failure with the reason.
            if getattr(exc, "result", None) is None:
                exc.result = order.result  # type: ignore[attr-defined]
            raise
        order.result["summary"] = _summary(order)
        return order.result

    async def aclose(self) -> None:
        await self.backend.aclose()
        for client in self._retired:
            await client.aclose()


def _summary(order: OrderRun) -> str:
    job = order.job
    student = order.result.get("student", job.student_field)
    summary = f"{job.verb} {job.workshop} for student {student} done"
    warnings = order.result.get("warnings")
    return f"{summary}, but: {'; '.join(warnings)}" if warnings else summary

