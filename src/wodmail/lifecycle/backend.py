"""The backend's ports, built once from the config: what the lifecycle is allowed to call.

Accounts (Linux passwords, homes, LDAP), deploy (templates), hooks, the portal and the hub.
The lifecycle calls these and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from wodmail.appliances import AppliancePool
from wodmail.config import Config, load_base_variables
from wodmail.errors import AccountError, ConfigurationError, TemplateError
from wodmail.hooks.phases import Hooks
from wodmail.host import accounts
from wodmail.host.deploy import (
    PDF_SCRIPT,
    DeployExtras,
    DeployResult,
    check_file,
    check_tree,
    deploy_workshop,
)
from wodmail.host.keypool import KeyPool
from wodmail.host.ldap import LdapSettings, set_ldap_password
from wodmail.host.passwords import generate_password
from wodmail.host.studentvars import StudentVars
from wodmail.installation.playbooks import TemplatingTasks, ansible_playbook, task_files
from wodmail.lifecycle.workshop import Workshop
from wodmail.logs import register_secret
from wodmail.peers.hub import HubClient
from wodmail.peers.portal import PortalClient
from wodmail.templating.renderer import Renderer, layer_variables
from wodmail.userdb import UserDb

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Account:
    """studentN on this backend: its home and numeric ids (from accounts.root)."""

    student: int
    name: str
    home: Path
    uid: int
    gid: int
    repaired: tuple[str, ...] = ()
    """What had to be repaired on the home itself (owner, mode) before the order used it."""


@dataclass
class Backend:
    config: Config
    portal: PortalClient | None
    hub: HubClient | None
    hooks: Hooks
    appliances: AppliancePool
    base_vars: dict[str, Any]
    student_vars: StudentVars
    _users: UserDb = field(init=False)
    keys: KeyPool = field(init=False)

    def __post_init__(self) -> None:
        self._users = UserDb(self.config.accounts.root)
        settings, students = self.config.accounts, self.config.students
        size = settings.ssh_key_pool
        if size is None:
            size = students.max - students.min + 1
        self.keys = KeyPool(size, settings.ssh_key_bits, self.config.state_dir / "keys")

    def start(self) -> None:
        self.keys.start()

    @classmethod
    def from_config(cls, config: Config, *, previous: Backend | None = None) -> Backend:
        """The backend of `config`. On a reload, `previous` lends what still fits: its key
        pool, its portal and hub clients (with their tokens) and its appliance connections
        when their settings match. Raises `ConfigurationError` before anything is built if
        hooks or variables are bad."""
        hooks = Hooks.from_config(config)
        base_vars = load_base_variables(config)
        portal = hub = None
        if previous is not None and previous.config.portal == config.portal:
            portal = previous.portal
        elif config.portal.url:
            portal = PortalClient(
                config.portal.url,
                config.portal.user,
                config.portal.password,
                timeout=config.portal.timeout_seconds,
                token_ttl=config.portal.token_ttl_seconds,
            )
        if previous is not None and previous.config.hub == config.hub:
            hub = previous.hub
        elif config.hub.url:
            hub = HubClient(config.hub.url, config.hub.token, timeout=config.hub.timeout_seconds)
        if previous is not None and (AppliancePool.settings_of(previous.config)
                                     == AppliancePool.settings_of(config)):
            appliances = previous.appliances
        else:
            appliances = AppliancePool.from_config(config)
        register_secret(config.accounts.ldap.password, permanent=True)
        backend = cls(
            config=config,
            portal=portal,
            hub=hub,
            hooks=hooks,
            appliances=appliances,
            base_vars=base_vars,
            student_vars=StudentVars(config.state_dir),
        )
        if previous is not None:
            backend.keys = previous.keys
        return backend

    def clients(self) -> list[PortalClient | HubClient | AppliancePool]:
        """What holds connections to peers (closed by `aclose`, or lent to a reload)."""
        kept = [client for client in (self.portal, self.hub) if client is not None]
        return [*kept, self.appliances]

    async def aclose(self) -> None:
        self.keys.stop()
        for client in self.clients():
            await client.aclose()

    # -- ids ---------------------------------------------------------------------------------

    def db_id(self, student: int) -> int:
        """The API-DB id of student N: N + BASESTDID."""
        return student + self.config.students.base_id

    def account(self, student: int) -> Account:
        """studentN, checked before anything changes it: known to accounts.root, with a home
        that is a real directory (not a symlink) owned by it and not writable by others
        (repaired when it is not)."""
        name = f"student{student}"
        home = self.config.students_dir / name
        if not home.is_dir() and not home.is_symlink():
            raise AccountError(f"no home for {name} ({home} does not exist)")
        entry = self._users.user(name)
        repaired = accounts.secure_home(home, entry.uid, entry.gid)
        return Account(student, name, home, entry.uid, entry.gid, tuple(repaired))

    def admin_uid(self) -> int | None:
        admin = self.config.accounts.admin_user
        return self._users.uid(admin) if admin else None

    async def script_exports(self) -> dict[str, str]:
        """What procmail-action.sh exported besides the order's own variables: the API-DB's
        URL (WODAPIDBEXTURL) and a valid moderator token (accessToken) for functions.sh."""
        exports = {}
        installation = self.config.wod_installation
        url = self.config.portal.url or (installation.values.get("WODAPIDBEXTURL")
                                         if installation else None)
        if url:
            exports["WODAPIDBEXTURL"] = url
        if self.portal is not None:
            token = await self.portal.access_token()
            register_secret(token)
            exports["accessToken"] = token
        return exports

    # -- passwords ---------------------------------------------------------------------------

    def new_password(self) -> str:
        settings = self.config.accounts
        password = settings.password or generate_password(
            settings.password_length, settings.password_alphabet
        )
        register_secret(password)
        return password

    async def set_password(self, workshop: Workshop, student: int, password: str) -> list[str]:
        """Sets studentN's password on Linux (and LDAP for `ldap` workshops); says where."""
        done = []
        if self.config.accounts.linux_passwords:
            await accounts.set_linux_password(
                f"student{student}", password, self.config.accounts.root
            )
            done.append("linux")
        if workshop.record.ldap:
            await set_ldap_password(self._ldap_settings(), self.ldap_login(workshop, student),
                                    password)
            done.append("ldap")
        return done

    def ldap_login(self, workshop: Workshop, student: int) -> str:
        prefix = self.config.accounts.ldap.prefixes.get(workshop.content, "student")
        return f"{prefix}{student}"

    def _ldap_settings(self) -> LdapSettings:
        ldap = self.config.accounts.ldap
        if not ldap.server:
            raise ConfigurationError("the workshop has `ldap` but accounts.ldap.server is not set")
        return LdapSettings(
            server=ldap.server,
            port=ldap.port,
            base_dn=ldap.base_dn,
            bind_dn=ldap.bind_dn,
            password=ldap.password,
            timeout=ldap.timeout_seconds,
        )

    # -- homes -------------------------------------------------------------------------------

    async def reset_home(self, account: Account) -> None:
        """Wipe HOME, dotfiles included; restore the skeleton; new ssh key pair; ownership."""
        await accounts.reset_home(
            account.home,
            self.config.accounts.skel,
            uid=account.uid,
            gid=account.gid,
            admin_uid=self.admin_uid(),
            key_comment=f"{account.name}@wodmail",
            take_key=self.keys.take,
        )

    async def end_processes(self, account: Account) -> int:
        if account.uid == os.getuid():
            # Only in a sandbox where students share our uid (the unprivileged demo).
            log.warning("not ending processes of our own uid", student=account.student)
            return 0
        return await accounts.end_processes(account.uid, self.config.accounts.kill_grace_seconds)

    # -- deploy ------------------------------------------------------------------------------

    def renderer(
        self,
        workshop: Workshop,
        student: int,
        password: str | None,
        *,
        defaults: dict[str, Any] | None = None,
    ) -> Renderer:
        """The template variables of a CREATE for `student`, layered as copy_folder.yml saw
        them; `defaults` stand below the per-student variables (`wodmail render`'s
        placeholders for what create hooks set)."""
        exposed = password if (workshop.record.ldap or workshop.record.varpass) else None
        notebooks = self.config.notebooks
        installation = self.config.wod_installation
        per_student = {**(defaults or {}), **self.student_vars.load(student, workshop.content)}
        extra: dict[str, Any] = {}
        if installation is not None:
            # The vaulted pass/variables_<W>_<N>.yml that create hooks write, as
            # copy_folder.yml included it; then what hooks gave wodmail itself.
            per_student = {
                **installation.student_variables(workshop.name, student), **per_student
            }
            extra = installation.extra_variables()
        variables = layer_variables(
            self.base_vars,
            self._vars_file(notebooks.public_vars, notebooks.public, workshop),
            self._vars_file(notebooks.private_vars, notebooks.private, workshop),
            per_student,
            stdid=student,
            workshop_ws=workshop.content,
            challenge_w=workshop.name,
            mode=workshop.mode,
            password=exposed,
            extra_vars=extra,
            vault=installation.vault if installation else None,
        )
        return Renderer(variables, time_limit_seconds=notebooks.render_timeout_seconds)

    async def check_templates(
        self, workshop: Workshop, student: int, *, undefined_ok: bool = False
    ) -> None:
        """Every template problem of the workshop for `student`, all at once, before any change.

        `undefined_ok`: only syntax errors count (a create hook may still set the variables).
        """
        renderer = self.renderer(workshop, student, "preflight-password")
        issues = await asyncio.to_thread(check_tree, workshop.folder, renderer)
        extras = self.deploy_extras(workshop, student)
        if extras is not None and extras.workspace_template is not None:
            issues.extend(check_file(extras.workspace_template, renderer))
        if undefined_ok:
            issues = [issue for issue in issues if not issue.undefined]
        if issues:
            listed = "; ".join(f"{issue.file}: {issue.problem}" for issue in issues[:20])
            more = f" (and {len(issues) - 20} more)" if len(issues) > 20 else ""
            count = len(issues)
            raise TemplateError(workshop.content, f"{count} template problem(s): {listed}{more}")

    @staticmethod
    def _vars_file(folder: Path | None, tree: Path | None, workshop: Workshop) -> Path | None:
        """variables_<W>.yml in the configured folder, else in the workshop's own folder."""
        if folder is None and tree is None:
            return None
        folder = folder if folder is not None else tree / workshop.content  # type: ignore[operator]
        path = folder / f"variables_{workshop.name}.yml"
        return path if path.is_file() else None

    def deploy_extras(
        self, workshop: Workshop, student: int, password: str | None = None
    ) -> DeployExtras | None:
        """The installation's own workspace template, wod-generate-pdf.sh and private
        templating tasks, those it has (None without an installation)."""
        installation = self.config.wod_installation
        if installation is None:
            return None
        sys_dir = Path(installation.values.get("WODSYSDIR") or "/nonexistent")
        templates = sorted(sys_dir.glob("lab-*.jupyterlab-workspace.j2"))
        pdf = sys_dir / PDF_SCRIPT
        tasks = None
        files = task_files(installation)
        if files:
            notebooks = self.config.notebooks
            candidates = (
                self._vars_file(notebooks.public_vars, notebooks.public, workshop),
                self._vars_file(notebooks.private_vars, notebooks.private, workshop),
                installation.pass_file(workshop.name, student),
            )
            order_vars: dict[str, Any] = {
                "STDID": str(student), "WORKSHOP": workshop.content,
                "CHALLENGE": workshop.name, "MODEWS": workshop.mode, "DIR": "",
            }
            if password is not None and (workshop.record.ldap or workshop.record.varpass):
                order_vars["PASSSTU"] = password
            tasks = TemplatingTasks(
                installation, files, order_vars,
                [installation.wod_yml, *(p for p in candidates if p and p.is_file())],
                self.config.scripts.timeout_seconds,
            )
        return DeployExtras(templates[0] if templates else None,
                            pdf if pdf.is_file() else None, tasks)

    def check_deploy_tools(self) -> None:
        """CREATE preflight: ansible-playbook is there when private templating tasks are."""
        files = task_files(self.config.wod_installation)
        if files and ansible_playbook() is None:
            names = ", ".join(str(path) for path in files.values())
            raise ConfigurationError(f"{names}: ansible-playbook is not installed to run it")

    async def deploy(
        self,
        workshop: Workshop,
        account: Account,
        renderer: Renderer,
        *,
        password: str | None = None,
        runs: list[dict[str, Any]] | None = None,
    ) -> DeployResult:
        """Deploys the workshop; what private templating tasks said is added to `runs`."""
        extras = self.deploy_extras(workshop, account.student, password)
        admin_uid = self.admin_uid()

        def deploy_and_give() -> DeployResult:  # one trip to a worker thread, not two
            result = deploy_workshop(workshop.folder, account.home, renderer, extras)
            accounts.give_to(result.student_paths, account.uid, account.gid, admin_uid)
            return result

        try:
            return await asyncio.to_thread(deploy_and_give)
        finally:
            if runs is not None and extras is not None and extras.tasks is not None:
                runs.extend(extras.tasks.runs)

    async def compile_scripts(
        self, workshop: Workshop, account: Account, renderer: Renderer
    ) -> list[str]:
        """CREATE step 4: each `compile` script rendered and compiled with shc into HOME."""
        made = []
        for name in workshop.record.compile:
            source = self._find_script(name)
            text = renderer.render(source.read_text(encoding="utf-8"), name)
            target = account.home / Path(name).stem
            await _shc(text, target)
            await asyncio.to_thread(
                accounts.give_to, [target], account.uid, account.gid, self.admin_uid()
            )
            made.append(target.name)
        return made

    def check_compile(self, workshop: Workshop) -> list[str]:
        """CREATE preflight: every `compile` script is found and shc is installed."""
        found = [str(self._find_script(name)) for name in workshop.record.compile]
        if found and shutil.which("shc") is None:
            raise ConfigurationError("shc is not installed; it is needed for `compile` workshops")
        return found

    def _find_script(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ConfigurationError(f"compile script name {name!r} is not a plain file name")
        for folder in (self.config.scripts.public, self.config.scripts.private):
            if folder is not None and (folder / name).is_file():
                return folder / name
        folders = ", ".join(str(f) for f in (self.config.scripts.public,
                                             self.config.scripts.private) if f is not None)
        raise ConfigurationError(
            f"compile script {name} is in neither scripts folder ({folders or 'none set'})"
        )


async def _shc(text: str, target: Path) -> None:
    """Compiles a shell script with shc; only the executable reaches the student's home."""
    shc = shutil.which("shc")
    if shc is None:
        raise ConfigurationError("shc is not installed; it is needed for `compile` workshops")
    with tempfile.TemporaryDirectory(prefix="wodmail-shc-") as tmp:
        source = Path(tmp) / "script.sh"
        source.write_text(text, encoding="utf-8")
        binary = Path(tmp) / "script"
        proc = await asyncio.create_subprocess_exec(
            shc, "-r", "-f", str(source), "-o", str(binary),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            message = output.decode("utf-8", "replace").strip()[-500:]
            raise AccountError(f"shc failed on {target.name}: {message}")
        shutil.move(binary, target)
        os.chmod(target, 0o755)
