"""A WoD installation read as its own scripts and playbooks read it, so nothing is retyped.

The installer (wod-install's install.sh and install-system.sh) writes `/etc/wod.sh` (shell
variables, including the `ansible-playbook` options WODANSPLAYOPT and WODANSPRIVOPT),
`/etc/wod.yml`, the backend inventory `<backend>/ansible/inventory`, and the private
`<private>/ansible/generated/<group>` file. The old backend rendered workshops with

    ansible-playbook <backend>/ansible/copy_folder.yml -i <backend>/ansible/inventory
        $WODPRIVINV --limit <group> -e "MODEWS=... DIR= CHALLENGE=... WORKSHOP=... STDID=..."
        $WODANSPLAYOPT $WODANSPRIVOPT --vault-password-file <private>/ansible/vault_secret

`Installation` holds the variables exactly as that command line saw them, as layers (each
with where it came from): the inventory-level variables (see `wodmail.installation.inventory`), the
gathered facts (`wodmail.installation.facts`), the play's VARDIR and VARPRIVDIR, `include_vars
/etc/wod.yml`; then, per order, the workshop's `variables_<W>.yml` files and the vaulted
per-student `pass/variables_<W>_<N>.yml`; above all of them the `-e` extra vars of
WODANSPLAYOPT and WODANSPRIVOPT (extra vars always win in Ansible). It is read once, at
start and on reload (`read_installation`); an order only reads its own per-student file.

Public API (used by the config, the backend and the hooks): `read_installation`,
`Installation` (`wod_sh`, `values`, `private_sh`, directories, `group`, `user`,
`vault_secret_file`, `vault`, `playbook_args()`, `pass_file()`, `student_variables()`,
`base_variables()`, `extra_variables()`, `origin()`, `config_defaults()`).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shlex
import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from wodmail.errors import AccountError, ConfigurationError, TemplateError, WodmailError
from wodmail.installation.facts import gather_facts
from wodmail.installation.inventory import Inventory, Layer, host_layers, read_inventory
from wodmail.safefiles import as_root, check_owner, open_file, whom
from wodmail.templating.renderer import Renderer
from wodmail.templating.varsfiles import as_variables, load_vars_file, parse_vars
from wodmail.templating.vault import EXTRA_HINT, Vault
from wodmail.userdb import UserDb

log = structlog.get_logger(__name__)

DEFAULT_WOD_SH = Path("/etc/wod.sh")
DEFAULT_WOD_YML = Path("/etc/wod.yml")
SHELL_TIMEOUT_SECONDS = 30.0
_SEPARATOR = b"--wodmail-separator--"
_SHELL_NOISE = frozenset({"_", "SHLVL", "PWD", "OLDPWD"})
# Sources wod.sh (descriptor $1) as the stock scripts do, then wod-private.sh (descriptor
# $2, if any), printing the environment before, between and after, NUL-separated ($3).
_SOURCE_SCRIPT = r"""
wodmail_wod=$1; wodmail_private=$2; wodmail_separator=$3
env -0; printf '%s\0' "$wodmail_separator"
set -a
. "/dev/fd/$wodmail_wod" >/dev/null 2>&1 </dev/null
env -0; printf '%s\0' "$wodmail_separator"
if [ -n "$wodmail_private" ]; then . "/dev/fd/$wodmail_private" >/dev/null 2>&1 </dev/null; fi
env -0
"""


@dataclass(frozen=True)
class Installation:
    """One WoD backend installation, as read at start (or reload). Immutable.

    `values` are the shell variables `/etc/wod.sh` (then `wod-private.sh`) define, as the
    stock scripts see them after sourcing; paths honour the `installation.*` overrides.
    """

    wod_sh: Path
    values: dict[str, str]
    private_sh: Path | None
    group: str
    user: str | None
    backend_dir: Path
    private_dir: Path
    ansible_dir: Path
    private_ansible_dir: Path
    scripts_dir: Path
    private_scripts_dir: Path
    notebooks_dir: Path | None
    private_notebooks_dir: Path
    wod_yml: Path
    vault_secret_file: Path
    hostname: str
    inventories: tuple[Path, ...]
    base_layers: tuple[Layer, ...]
    extra_layers: tuple[Layer, ...]
    path_origins: dict[str, str] = field(default_factory=dict)
    vault: Vault = field(default_factory=lambda: Vault(None), compare=False)

    # -- variables ---------------------------------------------------------------------

    def base_variables(self) -> dict[str, Any]:
        """Inventory-level variables, facts, play vars and /etc/wod.yml, merged."""
        return _merge(self.base_layers)

    def extra_variables(self) -> dict[str, Any]:
        """The `-e` options of WODANSPLAYOPT then WODANSPRIVOPT, merged: they win over all."""
        return _merge(self.extra_layers)

    def variables(self) -> dict[str, Any]:
        """Every installation variable an order does not change (base, then extra)."""
        return _merge((*self.base_layers, *self.extra_layers))

    def origin(self, name: str) -> str | None:
        """Where the effective value of template variable `name` comes from."""
        for layer in reversed((*self.base_layers, *self.extra_layers)):
            if name in layer.values:
                return layer.label
        return None

    def renderer(self) -> Renderer:
        return Renderer(self.variables(), hostname=self.hostname)

    # -- per student -------------------------------------------------------------------

    def pass_file(self, challenge: str, student: int) -> Path:
        """`<private ansible dir>/<group>/pass/variables_<W>_<N>.yml` (hooks write it)."""
        name = f"variables_{challenge}_{student}.yml"
        return self.private_ansible_dir / self.group / "pass" / name

    def student_variables(self, challenge: str, student: int) -> dict[str, Any]:
        """The per-student file's variables, decrypted; {} when there is none.

        Read on every call: create hooks write it during the order.
        """
        path = self.pass_file(challenge, student)
        if not path.is_file():
            return {}
        return load_vars_file(path, self.vault)

    def check(self) -> list[str]:
        """Warnings for `check-config`: what would make per-student variables unreadable."""
        warnings = []
        if not self.vault_secret_file.is_file():
            warnings.append(
                f"no vault secret at {self.vault_secret_file}: vaulted per-student variables "
                f"({self.private_ansible_dir / self.group / 'pass'}) cannot be read"
            )
        if importlib.util.find_spec("ansible") is None:
            warnings.append(
                f"ansible-core is not installed: vaulted per-student variables that create "
                f"scripts store cannot be read; {EXTRA_HINT}"
            )
        return warnings

    # -- running the installation's own ansible-playbook --------------------------------

    def playbook_args(self, vault_password_file: Path | None = None) -> list[str]:
        """The inventory, limit and extra-vars options of the old copy_folder.yml command;
        `vault_password_file`: a copy of the vault secret (`vault.secret()`) in a file of
        wodmail's own, so that ansible-playbook never opens, nor runs, the WoD user's."""
        args: list[str] = []
        for inventory in self.inventories:
            args += ["-i", str(inventory)]
        args += ["--limit", self.group]
        args += self.values.get("WODANSPLAYOPT", "").split()
        args += self.values.get("WODANSPRIVOPT", "").split()
        if vault_password_file is not None:
            args += ["--vault-password-file", str(vault_password_file)]
        return args

    # -- wodmail's settings --------------------------------------------------------------

    def config_defaults(self) -> tuple[dict[str, Any], dict[str, str]]:
        """wodmail config values the installation defines (nested), and their origins."""
        return _Defaults(self).build()


def _merge(layers: Iterable[Layer]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer.values)
    return merged


# -- reading ----------------------------------------------------------------------------


def read_installation(
    wod_sh: Path = DEFAULT_WOD_SH,
    *,
    backend_dir: Path | None = None,
    private_dir: Path | None = None,
    group: str | None = None,
    wod_yml: Path = DEFAULT_WOD_YML,
    accounts_root: Path = Path("/"),
) -> Installation:
    """Reads the installation; every error is a ConfigurationError naming the file."""
    values, private_sh = source_wod_sh(wod_sh, private_dir)
    origins: dict[str, str] = {}

    def path_of(name: str, override: Path | None, below: str, base: Path | None) -> Path:
        if override is not None and base is not None:
            origins[name] = "installation overrides"
            return base / below
        if values.get(name):
            origins[name] = f"{name} from {wod_sh}"
            return Path(values[name])
        if base is not None:
            return base / below
        raise ConfigurationError(f"{wod_sh}: does not define {name} (is it a WoD backend's?)")

    backend = backend_dir or Path(_require(values, "WODBEDIR", wod_sh))
    private = private_dir or Path(values.get("WODPRIVDIR") or backend.parent / "wod-private")
    group_name = group or _require(values, "WODGROUP", wod_sh)
    ansible_dir = path_of("WODANSIBLEDIR", backend_dir, "ansible", backend)
    private_ansible = path_of("WODANSIBLEPRIVDIR", private_dir, "ansible", private)
    private_scripts = path_of("WODSCRIPTPRIVDIR", private_dir, "scripts", private)
    installation = Installation(
        wod_sh=wod_sh,
        values=values,
        private_sh=private_sh,
        group=group_name,
        user=values.get("WODUSER") or None,
        backend_dir=backend,
        private_dir=private,
        ansible_dir=ansible_dir,
        private_ansible_dir=private_ansible,
        scripts_dir=path_of("WODSCRIPTDIR", backend_dir, "scripts", backend),
        private_scripts_dir=private_scripts,
        notebooks_dir=Path(values["WODNOBO"]) if values.get("WODNOBO") else None,
        private_notebooks_dir=path_of("WODPRIVNOBO", private_dir, "notebooks", private),
        wod_yml=wod_yml,
        vault_secret_file=private_ansible / "vault_secret",
        hostname="",
        inventories=(),
        base_layers=(),
        extra_layers=(),
        path_origins=origins,
        vault=Vault(private_ansible / "vault_secret", _uids(values.get("WODUSER"), accounts_root)),
    )
    return _with_layers(installation, accounts_root)


def _uids(user: str | None, accounts_root: Path) -> set[int]:
    """The uid of the installation's user, when it has an account."""
    if not user:
        return set()
    try:
        return {UserDb(accounts_root).uid(user)}
    except AccountError:
        return set()


def _require(values: dict[str, str], name: str, wod_sh: Path) -> str:
    if not values.get(name):
        raise ConfigurationError(f"{wod_sh}: does not define {name} (is it a WoD backend's?)")
    return values[name]


def source_wod_sh(wod_sh: Path, private_dir: Path | None) -> tuple[dict[str, str], Path | None]:
    """The variables `wod_sh` then wod-private.sh define, sourced by bash as the scripts do.

    wod-private.sh is `<private_dir>/scripts/wod-private.sh`, else the one in wod.sh's
    WODSCRIPTPRIVDIR. When wodmail is root, both are sourced with the rights of wod.sh's
    owner (the WoD user's, as the installer leaves it; root's for a file of root's) and
    must pass `wodmail.safefiles`' checks: UnsafeFile (a ConfigurationError) otherwise.
    """
    with _opened_wod_sh(wod_sh) as (wod_fd, sourcer):
        private = None if private_dir is None else private_dir / "scripts" / "wod-private.sh"
        sections = None
        if private is None:  # wod.sh says where it is: source it alone first
            sections = _source(wod_sh, sourcer, wod_fd, None)
            found = sections[1].get("WODSCRIPTPRIVDIR")
            private = Path(found) / "wod-private.sh" if found else None
        with _opened_private(private, wod_sh, sourcer) as private_fd:
            if sections is None or private_fd is not None:
                sections = _source(wod_sh, sourcer, wod_fd, private_fd)
            sourced = private if private_fd is not None else None
    before, after_wod, after_private = sections
    values = _changed(before, after_wod)
    values.update(_changed(after_wod, after_private))
    return values, sourced


@contextmanager
def _opened_wod_sh(wod_sh: Path) -> Iterator[tuple[int, int | None]]:
    """wod.sh's descriptor, and the uid it is sourced as (None: ours, not root)."""
    try:
        fd = open_file(wod_sh, follow=True)  # its path is root's choice (/etc)
    except OSError as exc:
        raise ConfigurationError(
            f"installation.wod_sh: cannot read {wod_sh}: {exc.strerror} (the file the WoD "
            "installer writes; set installation.wod_sh if it is elsewhere)"
        ) from None
    try:
        sourcer = None
        if as_root():
            # The installer gives wod.sh to the WoD user, whose scripts source it: it runs
            # with its owner's rights, never root's (a file its owner may edit runs as its
            # owner), and must not be writable by anyone else.
            info = os.fstat(fd)
            sourcer = info.st_uid
            check_owner(wod_sh, info, owners={sourcer}, use=f"sourced as {whom(sourcer)}")
        yield fd, sourcer
    finally:
        os.close(fd)


@contextmanager
def _opened_private(
    private: Path | None, wod_sh: Path, sourcer: int | None
) -> Iterator[int | None]:
    """wod-private.sh's descriptor; None when there is none to source (missing, or, not
    root, unreadable: bash skipped those too)."""
    if private is None:
        yield None
        return
    try:
        # Its path is in the WoD user's tree: root does not follow a link there.
        fd = open_file(private, follow=sourcer is None)
    except OSError as exc:
        if exc.errno == errno.ENOENT or sourcer is None:
            yield None
            return
        raise ConfigurationError(f"{private}: cannot be read: {exc.strerror}") from None
    try:
        if sourcer is not None:
            check_owner(private, os.fstat(fd), owners={0, sourcer},
                        use=f"sourced as {whom(sourcer)} after {wod_sh}")
        yield fd
    finally:
        os.close(fd)


def _source(
    wod_sh: Path, sourcer: int | None, wod_fd: int, private_fd: int | None
) -> list[dict[str, str]]:
    """The environment before, after wod.sh and after wod-private.sh, from one bash run."""
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/")}
    as_owner: dict[str, Any] = {}
    if sourcer:
        as_owner = {"user": sourcer, "group": os.fstat(wod_fd).st_gid, "extra_groups": []}
    fds = (wod_fd,) if private_fd is None else (wod_fd, private_fd)
    try:
        run = subprocess.run(
            ["bash", "--noprofile", "--norc", "-c", _SOURCE_SCRIPT, "wodmail", str(wod_fd),
             "" if private_fd is None else str(private_fd), _SEPARATOR.decode()],
            env=environment, capture_output=True, timeout=SHELL_TIMEOUT_SECONDS, check=False,
            stdin=subprocess.DEVNULL, cwd="/", pass_fds=fds, **as_owner,
        )
    except FileNotFoundError:
        raise ConfigurationError(f"bash is needed to read {wod_sh} and is not installed") from None
    except subprocess.TimeoutExpired:
        limit = f"{SHELL_TIMEOUT_SECONDS:.0f} s"
        raise ConfigurationError(f"{wod_sh}: sourcing it took over {limit}") from None
    sections = _sections(run.stdout)
    if len(sections) != 3:
        detail = run.stderr.decode("utf-8", "replace").strip()[-300:]
        raise ConfigurationError(f"{wod_sh}: bash could not source it: {detail or 'no output'}")
    return sections


def _sections(output: bytes) -> list[dict[str, str]]:
    sections: list[dict[str, str]] = [{}]
    for item in output.split(b"\0"):
        if item == _SEPARATOR:
            sections.append({})
            continue
        text = item.decode("utf-8", "replace")
        key, equals, value = text.partition("=")
        if equals and key and "\n" not in key:
            sections[-1][key] = value
    return sections


def _changed(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in after.items()
        if key and key not in _SHELL_NOISE and before.get(key) != value
    }


def _with_layers(installation: Installation, accounts_root: Path) -> Installation:
    vault = installation.vault
    inventories = _inventories(installation)
    playbook_dir = installation.ansible_dir

    def load(path: Path) -> dict[str, Any]:
        try:
            return load_vars_file(path, vault)
        except TemplateError as exc:
            raise ConfigurationError(str(exc)) from None

    hostname, layers = host_layers(inventories, playbook_dir, installation.group, load)
    layers.append(Layer("facts", gather_facts(installation.user, accounts_root)))
    layers.append(Layer("inventory magic variables", _magic(installation, hostname, inventories)))
    layers.append(Layer(f"{playbook_dir / 'copy_folder.yml'} (play vars)", {
        "VARDIR": "{{ WODANSIBLEDIR }}/{{ WODGROUP }}",
        "VARPRIVDIR": "{{ WODANSIBLEPRIVDIR }}/{{ WODGROUP }}",
    }))
    if not installation.wod_yml.is_file():
        raise ConfigurationError(
            f"installation.wod_yml: {installation.wod_yml} does not exist (copy_folder.yml "
            "includes it; set installation.wod_yml if it is elsewhere)"
        )
    layers.append(Layer(str(installation.wod_yml), load(installation.wod_yml)))
    extra = [
        *extra_vars_layers(installation.values.get("WODANSPLAYOPT", ""), "WODANSPLAYOPT", vault),
        *extra_vars_layers(installation.values.get("WODANSPRIVOPT", ""), "WODANSPRIVOPT", vault),
    ]
    log.debug("installation read", wod_sh=str(installation.wod_sh), host=hostname,
              layers=len(layers) + len(extra))
    return _replace(installation, hostname=hostname,
                    inventories=tuple(inventory.path for inventory in inventories),
                    base_layers=tuple(layers), extra_layers=tuple(extra))


def _replace(installation: Installation, **changes: Any) -> Installation:
    from dataclasses import replace

    return replace(installation, **changes)


def _inventories(installation: Installation) -> list[Inventory]:
    """The backend inventory, then the private one when it exists (wod.sh's WODPRIVINV)."""
    backend = installation.ansible_dir / "inventory"
    if not backend.is_file():
        raise ConfigurationError(f"no backend inventory at {backend} (the installer writes it)")
    paths = [backend]
    private = installation.private_ansible_dir / "inventory"
    if private.is_file():
        paths.append(private)
    return [read_inventory(path) for path in paths]


def _magic(installation: Installation, host: str, inventories: list[Inventory]) -> dict[str, Any]:
    groups = set()
    for inventory in inventories:
        groups |= inventory.groups_of(host)
    return {
        "inventory_hostname": host,
        "inventory_hostname_short": host.split(".")[0],
        "group_names": sorted(groups - {"all", "ungrouped"}),
        "playbook_dir": str(installation.ansible_dir),
        "inventory_dir": str(inventories[0].path.parent),
        "inventory_file": str(inventories[0].path),
    }


def extra_vars_layers(options: str, name: str, vault: Vault) -> list[Layer]:
    """The `-e` options in `options` (split on blanks, as the unquoted shell expansion
    `$WODANSPLAYOPT` is), each a layer: `@file`, a YAML/JSON mapping, or KEY=VALUE pairs."""
    words = options.split()
    layers: list[Layer] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word in ("-e", "--extra-vars"):
            if index >= len(words):
                raise ConfigurationError(f"{name}: {word} without a value")
            value = words[index]
            index += 1
        elif word.startswith("--extra-vars="):
            value = word.split("=", 1)[1]
        elif word.startswith("-e") and len(word) > 2:
            value = word[2:]
        else:
            continue  # not an extra-vars option (ansible-playbook takes others too)
        layers.append(_extra_layer(value, name, vault))
    return layers


def _extra_layer(value: str, name: str, vault: Vault) -> Layer:
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return Layer(f"-e @{path} ({name})", load_vars_file(path, vault))
        except TemplateError as exc:
            raise ConfigurationError(f"{name}: -e @{path}: {exc}") from None
    if value.startswith(("{", "[")):
        try:
            return Layer(f"-e {value} ({name})", as_variables(parse_vars(value, name), name))
        except Exception as exc:
            raise ConfigurationError(f"{name}: -e {value}: {exc}") from None
    return Layer(f"-e {_masked(value)} ({name})", parse_kv(value))


def _masked(value: str) -> str:
    key, equals, _ = value.partition("=")
    return f"{key}=..." if equals and _looks_secret(key) else value


def _looks_secret(key: str) -> bool:
    return any(part in key.upper() for part in ("PWD", "PASS", "TOKEN", "SECRET", "KEY"))


def parse_kv(text: str) -> dict[str, str]:
    """Ansible's `-e "K=V K2=V2"`: quoted words, values always strings."""
    result: dict[str, str] = {}
    for word in shlex.split(text):
        key, equals, value = word.partition("=")
        if equals and key:
            result[key] = value
    return result


# -- wodmail settings from the installation ----------------------------------------------

def _as_int(value: Any) -> int:
    return int(str(value).strip())


def _as_text(value: Any) -> str:
    return str(value)


def _as_list(value: Any) -> list[str]:
    return [str(value)]


# config key: installation variable names to try (first defined wins), conversion.
SETTINGS: tuple[tuple[str, tuple[str, ...], Callable[[Any], Any]], ...] = (
    ("listen.port", ("WODPOSTPORT",), _as_int),
    ("allowed_senders", ("WODSENDER",), _as_list),
    ("students.min", ("WODUSERMIN", "USERMIN"), _as_int),
    ("students.max", ("WODUSERMAX", "USERMAX"), _as_int),
    ("students.base_id", ("WODBASESTDID", "BASESTDID"), _as_int),
    ("students_dir", ("WODSTUDDIR",), _as_text),
    ("portal.url", ("WODAPIDBEXTURL", "WODAPIDBURL"), _as_text),
    ("portal.user", ("WODAPIDBUSER",), _as_text),
    ("portal.password", ("WODAPIDBUSERPWD",), _as_text),
    ("hub.url", ("WODBEAPIURL",), _as_text),
    ("hub.token", ("WODBETOKEN",), _as_text),
    ("accounts.admin_user", ("WODUSER",), _as_text),
    ("accounts.ldap.server", ("WODLDAPSRVNAME",), _as_text),
    ("accounts.ldap.port", ("WODLDAPPORT",), _as_int),
    ("accounts.ldap.base_dn", ("WODLDAPDMN",), _as_text),
    ("accounts.ldap.password", ("WODLDAPPWD",), _as_text),
)


class _Defaults:
    def __init__(self, installation: Installation) -> None:
        self.installation = installation
        self.renderer = installation.renderer()
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def build(self) -> tuple[dict[str, Any], dict[str, str]]:
        for key, names, convert in SETTINGS:
            self._setting(key, names, convert)
        self._paths()
        self._addresses()
        return _nested(self.values), dict(self.origins)

    def _addresses(self) -> None:
        """listen.host: the backend's addresses (WODBEFQDN) and loopback, as Postfix listened
        (inet_interfaces = WODBEFQDN, localhost); allowed_networks: loopback and the API-DB
        host's addresses (WODAPIDBFQDN, else the portal URL's host), which connects to
        WODBEFQDN:WODPOSTPORT. Resolved when the config is read (start, each reload)."""
        backend = self._lookup("WODBEFQDN")
        if backend is not None:
            addresses = resolve_addresses(str(backend[0]))
            hosts = list(dict.fromkeys([*addresses, "127.0.0.1"]))
            self.values["listen.host"] = hosts if len(hosts) > 1 else hosts[0]
            self.origins["listen.host"] = f"WODBEFQDN from {backend[1]} (resolved) and loopback"
        portal = self._lookup("WODAPIDBFQDN")
        if portal is None:
            url = self._lookup("WODAPIDBEXTURL") or self._lookup("WODAPIDBURL")
            if url is not None:
                portal = (urlsplit(str(url[0])).hostname or "", url[1])
        if portal is not None and portal[0]:
            addresses = resolve_addresses(str(portal[0]))
            networks = ["127.0.0.0/8", "::1/128", *(_host_network(a) for a in addresses)]
            self.values["allowed_networks"] = list(dict.fromkeys(networks))
            self.origins["allowed_networks"] = (
                f"loopback and the API-DB host {portal[0]} (resolved) from {portal[1]}"
            )

    def _setting(self, key: str, names: tuple[str, ...], convert: Callable[[Any], Any]) -> None:
        for name in names:
            found = self._lookup(name)
            if found is None:
                continue
            value, origin = found
            try:
                self.values[key] = convert(value)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"{key}: {name} ({origin}) is {value!r}, not usable here"
                ) from None
            self.origins[key] = f"{name} from {origin}"
            return

    def _lookup(self, name: str) -> tuple[Any, str] | None:
        installation = self.installation
        origin = installation.origin(name)
        if origin is not None:
            try:
                value = self.renderer.value(name)
            except WodmailError as exc:
                raise ConfigurationError(f"{name} ({origin}): {exc}") from None
            if value is not None and value != "":
                return value, origin
        if installation.values.get(name):
            source = installation.wod_sh
            if installation.private_sh is not None and name.startswith("WODAPIDB"):
                source = installation.private_sh
            return installation.values[name], str(source)
        return None

    def _paths(self) -> None:
        installation = self.installation
        group = installation.group
        origins = installation.path_origins
        paths: list[tuple[str, Path | None, str]] = [
            ("notebooks.public", installation.notebooks_dir, f"WODNOBO from {installation.wod_sh}"),
            ("notebooks.private", installation.private_notebooks_dir,
             origins.get("WODPRIVNOBO", "WODPRIVNOBO")),
            ("notebooks.public_vars", installation.ansible_dir / group,
             f"VARDIR of copy_folder.yml ({origins.get('WODANSIBLEDIR', 'WODANSIBLEDIR')})"),
            ("notebooks.private_vars", installation.private_ansible_dir / group,
             f"VARPRIVDIR of copy_folder.yml ({origins.get('WODANSIBLEPRIVDIR', '')})"),
            ("scripts.public", installation.scripts_dir, origins.get("WODSCRIPTDIR", "")),
            ("scripts.private", installation.private_scripts_dir,
             origins.get("WODSCRIPTPRIVDIR", "")),
        ]
        for key, path, origin in paths:
            if path is not None:
                self.values[key] = str(path)
                self.origins[key] = origin
        skel = [path for path in self._skeletons() if path.is_dir()]
        if skel:
            self.values["accounts.skel"] = [str(path) for path in skel]
            self.origins["accounts.skel"] = "WODINSDIR/../skel, WODPRIVDIR/skel (wod_erase_student)"

    def _skeletons(self) -> list[Path]:
        installation = self.installation
        found = []
        if installation.values.get("WODINSDIR"):
            found.append(Path(installation.values["WODINSDIR"]).parent / "skel")
        found.append(installation.private_dir / "skel")
        return found


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return nested


def resolve_addresses(name: str) -> list[str]:
    """The addresses `name` resolves to now (none when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(name.strip(), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _host_network(address: str) -> str:
    return f"{address}/128" if ":" in address else f"{address}/32"
