"""A backend as the stock WoD installs had it, so that the stock appliance scripts
(support.stock_appliance_scripts) run unchanged against a test appliance.

The stock scripts run as WODUSER (`wodadmin`), and count on what the installer gave it:

- NOPASSWD sudo on the backend: they `sudo cp` the student's key out of the home and
  `sudo install -o studentN` files into it;
- `ssh $WODRTARGET` reaching the appliance as `wodadmin` with WODUSER's key and no question
  about host keys: a `~/.ssh/config` in its home (ssh reads the home of its uid's passwd
  entry, never $HOME);
- the students known by name (`install -o student3`);
- for the container workshops, `ansible-vault` on its PATH (~/bin, from its ~/.profile) and
  WODANSIBLEPRIVDIR with its vault_secret and `<WODGROUP>/pass/`, where the create scripts
  vault the token and ports (`StockHost.student_vars` reads them back), and on the
  appliance the docker group (`prepare_appliance`).

The sandbox's accounts (studentN with uid 62000+N, wodadmin 62999: `wodmail.dev.sandbox`)
are not the host's, and the host has no sudo rule for them. So the daemon serving these
orders is a real `wodmail serve` started in a private mount namespace with an overlay on
/etc, whose passwd, group and shadow hold the sandbox's entries and the host's, and whose
sudoers.d adds WODUSER's NOPASSWD rule. Nothing of the host is changed; it needs `sudo`
installed (scripts/system-deps.sh), root, and `unshare` (util-linux).

WODUSER's home, the rendered scripts and the namespace's files live in a temp folder of
their own (0711: pytest's temp root is 0700, which WODUSER could not cross).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support import reaper
from support.appliances import Appliance, KeyPair
from support.served import NotifySocket
from support.stock_appliance_scripts import StockSettings, write_stock_scripts
from support.user_ansible import AnsibleForUser
from support.workshop_orders import WorkshopBackend, workshop_box
from wodmail.config import parse_config
from wodmail.dev.sandbox import ADMIN_UID, Sandbox
from wodmail.dev.standins.mail_clients import send_portal_style
from wodmail.journal.jobs import Job
from wodmail.journal.store import JournalReader
from wodmail.templating.varsfiles import load_vars_file
from wodmail.templating.vault import Vault

WODUSER = "wodadmin"
GROUP = "production"  # WODGROUP
VAULT_PASSWORD = "stock-vault-secret"
LIMIT = 120.0

# As every stock install left WODUSER: its key, its own name on the appliances, and host
# keys neither checked nor remembered (wod-backend's NOCHECKSSH, for the plain `ssh` too).
SSH_CONFIG = """\
Host *
    User {user}
    IdentityFile ~/.ssh/id_wodadmin
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
"""

# Mounts the namespace's /etc, then becomes the daemon. An overlay on /etc, not a bind
# mount of each file: a file bound over /etc/passwd is unmounted in every namespace as soon
# as the host's useradd (another test's throwaway user) renames a new file over it.
MOUNTS = r"""
set -eu
upper=$1 work=$2
shift 2
mount -t overlay stock-backend-etc -o "lowerdir=/etc,upperdir=$upper,workdir=$work" /etc
exec "$@"
"""


def missing() -> str | None:
    """Why the stock scripts cannot run here, or None."""
    if os.geteuid() != 0:
        return "the stock scripts' backend needs root (a mount namespace, sudo, chown)"
    for tool in ("sudo", "unshare", "curl", "jq", "scp", "bash"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/system-deps.sh installs it as root)"
    if not Path("/etc/sudoers.d").is_dir():
        return "sudo's /etc/sudoers.d is missing (scripts/system-deps.sh installs sudo)"
    return None


@dataclass
class StockHost:
    """WODUSER's home, the rendered scripts and the namespace's etc files, in `folder`."""

    folder: Path

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def scripts(self) -> Path:
        return self.folder / "scripts"

    @property
    def etc(self) -> Path:
        return self.folder / "etc"

    @property
    def ansible_private(self) -> Path:
        """WODANSIBLEPRIVDIR: vault_secret, and <WODGROUP>/pass/ the scripts vault into."""
        return self.folder / "ansible-private"

    def student_vars(self, workshop: str, student: int) -> dict[str, object]:
        """What the create scripts vaulted for the student (`pass/variables_W_N.yml`),
        decrypted as wodmail reads it with an installation; {} when there is no file."""
        path = self.ansible_private / GROUP / "pass" / f"variables_{workshop}_{student}.yml"
        if not path.exists():
            return {}
        vault = Vault(self.ansible_private / "vault_secret", owners={ADMIN_UID})
        return load_vars_file(path, vault)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def prepare_stock_host(box: Sandbox, key: KeyPair, *,
                       hostvars: Mapping[str, str | int] | None = None,
                       ansible: AnsibleForUser | None = None) -> StockHost:
    """The temp folder of a stock backend on `box`, WODUSER logging in with `key`; with
    `ansible`, WODUSER has `ansible-vault` on its PATH (the container workshops vault their
    ports and tokens)."""
    host = StockHost(Path(tempfile.mkdtemp(prefix="wodmail-stock-")))
    try:
        host.folder.chmod(0o711)
        _woduser_home(host.home, key, ansible)
        _ansible_private(host.ansible_private)
        _set_home(box.accounts_root / "etc" / "passwd", WODUSER, host.home)
        _namespace_etc(host.etc, box.accounts_root / "etc")
        write_stock_scripts(host.scripts, StockSettings(
            str(box.students_dir), ansible_private=str(host.ansible_private), group=GROUP,
            hostvars=hostvars or {}))
    except BaseException:
        host.close()
        raise
    return host


def _woduser_home(home: Path, key: KeyPair, ansible: AnsibleForUser | None) -> None:
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    (ssh / "config").write_text(SSH_CONFIG.format(user=WODUSER))
    shutil.copyfile(key.private, ssh / "id_wodadmin")
    (ssh / "id_wodadmin").chmod(0o600)
    # Debian's default .profile puts ~/bin on PATH: the login shell the scripts run in
    (home / ".profile").write_text('PATH="$HOME/bin:$PATH"\n')
    if ansible is not None:
        ansible.write_ansible_vault(home / "bin")
    _own(home)


def _ansible_private(folder: Path) -> None:
    (folder / GROUP / "pass").mkdir(parents=True)
    (folder / "vault_secret").write_text(VAULT_PASSWORD + "\n")
    (folder / "vault_secret").chmod(0o600)
    _own(folder)


def _own(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        os.lchown(path, ADMIN_UID, ADMIN_UID)


def _set_home(passwd: Path, user: str, home: Path) -> None:
    lines = []
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            fields[5] = str(home)
        lines.append(":".join(fields))
    passwd.write_text("\n".join(lines) + "\n")


def _namespace_etc(etc: Path, sandbox_etc: Path) -> None:
    """passwd, group, shadow: the sandbox's accounts (root left out) before the host's, the
    host's ones clashing with them by name or id left out; sudoers.d: WODUSER's rule."""
    etc.mkdir(mode=0o755)
    (etc.parent / "etc-work").mkdir(mode=0o700)
    for name, id_field in (("passwd", 2), ("group", 2), ("shadow", None)):
        ours = [line.split(":") for line in (sandbox_etc / name).read_text().splitlines()
                if line and not line.startswith("root:")]
        names = {fields[0] for fields in ours}
        ids = {fields[id_field] for fields in ours} if id_field is not None else set()
        host = [line.split(":") for line in Path("/etc", name).read_text().splitlines() if line]
        kept = [fields for fields in host if fields[0] not in names
                and (id_field is None or fields[id_field] not in ids)]
        if name == "shadow":  # pam_unix's account check wants WODUSER there, not locked out
            ours = [[f[0], "*", *f[2:]] if f[0] == WODUSER else f for f in ours]
        (etc / name).write_text("".join(":".join(f) + "\n" for f in ours + kept))
        (etc / name).chmod(0o640 if name == "shadow" else 0o644)
    sudoers = etc / "sudoers.d"
    sudoers.mkdir(mode=0o755)
    (sudoers / WODUSER).write_text(f"{WODUSER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    (sudoers / WODUSER).chmod(0o440)


class NamespacedServe:
    """`wodmail serve --config FILE` in the stock backend's mount namespace; orders go in
    over SMTP as the portal sends them, results are read from its journal. With `cgroups`
    it runs in a sub-cgroup of them, killed with them (support.reaper) if the test dies."""

    def __init__(self, host: StockHost, config_file: Path, work: Path,
                 cgroups: reaper.ReapedCgroup | None = None) -> None:
        config = parse_config(yaml.safe_load(config_file.read_text()), str(config_file))
        self._journal = config.journal_path()
        self.log_path = work / "stock-serve.log"
        self._notify = NotifySocket(work / "stock-notify.sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(self._notify.path)}
        env.pop("WATCHDOG_PID", None)
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNTS,
                "stock-backend", str(host.etc), str(host.folder / "etc-work"),
                sys.executable, "-m", "wodmail.cli", "serve", "--config", str(config_file)]
        self._cgroup = cgroups.child(f"stock-serve-{host.folder.name}") if cgroups else None
        join = reaper.ReapedCgroup.joiner(self._cgroup) if self._cgroup else None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env,
                                         preexec_fn=join)
        self.port = 0
        self._reader: JournalReader | None = None

    async def start(self) -> NamespacedServe:
        ready = await asyncio.to_thread(self._notify.wait_for, "READY", LIMIT)
        match = re.search(r"listening on [^ ]+:(\d+)", ready.get("STATUS", ""))
        assert match, f"READY=1 without the port in its STATUS: {ready}\n{self.log()}"
        self.port = int(match.group(1))
        self._reader = JournalReader(self._journal)
        return self

    async def order(self, subject: str, body: str, *, limit: float = LIMIT) -> Job:
        """Sends one portal-style order and waits for its result."""
        known = {job.id for job in self.jobs()}
        await asyncio.to_thread(send_portal_style, "127.0.0.1", self.port, subject, body)
        deadline = time.monotonic() + limit
        while True:
            new = [job for job in self.jobs() if job.id not in known and job.subject == subject]
            if new and new[0].state.finished:
                return new[0]
            assert self.proc.poll() is None, f"wodmail serve ended:\n{self.log()}"
            assert time.monotonic() < deadline, f"no result for {subject!r} after {limit} s"
            await asyncio.sleep(0.05)

    def jobs(self) -> list[Job]:
        assert self._reader is not None, "not started"
        return self._reader.list_jobs(newest_first=False)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, LIMIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._cgroup is not None:  # what the scripts left running too
            reaper.kill(self._cgroup)
        self._notify.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]


@dataclass
class StockBackend:
    """A stock backend serving a workshop with its stock scripts (`hooks.use_scripts`)."""

    orders: WorkshopBackend
    host: StockHost

    async def stop(self) -> None:
        try:
            await self.orders.stop()
        finally:
            self.host.close()


async def stock_backend(tmp_path: Path, appliance: Appliance, key: KeyPair, workshop: str, *,
                        ansible: AnsibleForUser | None = None,
                        cgroups: reaper.ReapedCgroup | None = None,
                        **options: Any) -> StockBackend:
    """A running stock backend (its sandbox in `tmp_path/box`) serving `workshop` on
    `appliance` with the stock scripts; `options` are those of `workshop_box` (its
    `variables` are the scripts' hostvars too), `ansible` that of `prepare_stock_host`,
    `cgroups` those of `NamespacedServe` (the tests' `appliance_cgroups`).

    The appliance's students must live where the backend's do (WODSTUDDIR is one path for
    both in the stock scripts): make it with `students_dir=stock_students_dir(tmp_path)`."""
    made = workshop_box(tmp_path, appliance, key, workshop, **options)
    host: StockHost | None = None
    try:
        assert appliance.spec.students_dir == str(made.box.students_dir), (
            "the appliance's students_dir must be the stock backend's WODSTUDDIR")
        host = prepare_stock_host(made.box, key, hostvars=options.get("variables"),
                                  ansible=ansible)
        made.data["hooks"] = {"use_scripts": [workshop]}
        made.data["scripts"] = {"public": str(host.scripts), "run_as": WODUSER}
        config_file = tmp_path / "wodmail-stock.yml"
        config_file.write_text(yaml.safe_dump(made.data))
        wod = NamespacedServe(host, config_file, tmp_path, cgroups)
        try:
            await wod.start()
        except BaseException:
            await wod.stop()
            raise
    except BaseException:
        made.box.close()
        if host is not None:
            host.close()
        raise
    return StockBackend(made.started(config_file, wod), host)


def stock_students_dir(tmp_path: Path) -> str:
    """The WODSTUDDIR of `stock_backend(tmp_path, ...)`: its sandbox's students folder."""
    return str(tmp_path / "box" / "student")


def prepare_appliance(appliance: Appliance) -> None:
    """What a stock appliance had beyond the fixture's, for both kinds of backend:

    - /tmp back to 1777 when the students' folder lies under /tmp (the fixture made the
      folders above the homes 0755, /tmp with them): the scripts make their scratch
      folders there as WODUSER;
    - with docker, WODUSER in the docker group (the installation's docker set-up): the
      stock Spark101 script runs `docker ps` and `docker cp` as WODUSER."""
    appliance.run("chmod", "1777", "/tmp")
    if appliance.spec.docker:
        appliance.run("usermod", "-a", "-G", "docker", appliance.admin)
