"""`wodmail check-config`: the config checked against the world it points at.

Each check is one line, `ok`, `warn` or `FAIL`, naming what was checked, what was found and
where the value came from (the config file, the installation, or the default). Nothing is
changed: the portal is only logged in to, the hub only asked who the token is, the port
only bound and released, folders and accounts only read, appliances only logged in to
(`true`, `sudo -n true`, the docker and compose versions) with no host key pinned.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from wodmail.config import Config, load_base_variables, provenance
from wodmail.errors import WodmailError
from wodmail.installation.reader import resolve_addresses
from wodmail.intake import localusers
from wodmail.intake.gate import in_networks
from wodmail.relay.routing import order_recipients
from wodmail.status.token import TokenFileError, read_token
from wodmail.userdb import UserDb

Status = Literal["ok", "warn", "FAIL"]
PEER_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Check:
    status: Status
    what: str
    detail: str
    origin: str | None = None

    def line(self) -> str:
        where = f"  [{self.origin}]" if self.origin else ""
        return f"{self.status:<4}  {self.what}: {self.detail}{where}"


class _Checks:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.origins = provenance(config)
        self.found: list[Check] = []

    def add(self, status: Status, what: str, detail: str, key: str | None = None) -> None:
        self.found.append(Check(status, what, detail, self.origins.get(key) if key else None))


def run_checks(config: Config) -> list[Check]:
    """Every check, in a stable order."""
    checks = _Checks(config)
    for step in STEPS:
        try:
            step(checks)
        except Exception as exc:  # a check that breaks is a failure, not a traceback
            checks.add("FAIL", step.__name__.strip("_").replace("_", " "),
                       f"the check itself failed: {type(exc).__name__}: {exc}")
    return checks.found


# -- URLs and peers --------------------------------------------------------------------------


def _url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"{url!r} has no http:// or https:// scheme"
    if not parts.hostname:
        return f"{url!r} has no host"
    return None


def _urls(checks: _Checks) -> None:
    for name, url in (("portal.url", checks.config.portal.url),
                      ("hub.url", checks.config.hub.url)):
        if not url:
            checks.add("warn", name, "not set: these callbacks are skipped", name)
            continue
        problem = _url_problem(url)
        checks.add("FAIL" if problem else "ok", name, problem or url, name)


def _portal_login(checks: _Checks) -> None:
    portal = checks.config.portal
    if not portal.url or _url_problem(portal.url):
        return
    from wodmail.peers.portal import PortalClient

    async def login() -> None:
        client = PortalClient(portal.url or "", portal.user, portal.password,
                              timeout=min(portal.timeout_seconds, PEER_TIMEOUT_SECONDS),
                              token_ttl=portal.token_ttl_seconds)
        async with client:
            await client.access_token()

    try:
        asyncio.run(login())
    except WodmailError as exc:
        checks.add("FAIL", "portal login", f"as {portal.user}: {exc}", "portal.user")
    else:
        checks.add("ok", "portal login", f"as {portal.user} accepted by {portal.url}",
                   "portal.user")


def _hub_token(checks: _Checks) -> None:
    hub = checks.config.hub
    if not hub.url or _url_problem(hub.url):
        return
    from wodmail.peers.hub import HubClient

    async def identify() -> None:
        client = HubClient(hub.url or "", hub.token,
                           timeout=min(hub.timeout_seconds, PEER_TIMEOUT_SECONDS))
        async with client:
            await client.check_token()

    try:
        asyncio.run(identify())
    except WodmailError as exc:
        checks.add("FAIL", "hub token", str(exc), "hub.token")
    else:
        checks.add("ok", "hub token", "accepted, may start, stop and read servers", "hub.token")


# -- accounts, folders, homes ------------------------------------------------------------------


def _users(checks: _Checks) -> None:
    config = checks.config
    users = UserDb(config.accounts.root)
    named = [("accounts.admin_user", config.accounts.admin_user)]
    if config.scripts.run_as:
        named.append(("scripts.run_as", config.scripts.run_as))
    for key, name in named:
        if not name:
            checks.add("warn", key, "not set: no admin ACLs on deployed workshops", key)
            continue
        try:
            entry = users.user(name)
            group = _group_name(users, entry.gid)
        except WodmailError as exc:
            checks.add("FAIL", key, str(exc), key)
            continue
        checks.add("ok", key, f"{name} (uid {entry.uid}, group {group})", key)
    missing = [n for n in _range(config) if not _has_user(users, f"student{n}")]
    what = f"student users {config.students.min}..{config.students.max}"
    if missing:
        checks.add("FAIL", what, f"missing in {users.passwd_file}: {_compact(missing)}",
                   "students.max")
    else:
        checks.add("ok", what, f"all in {users.passwd_file}", "students.max")


def _group_name(users: UserDb, gid: int) -> str:
    for line in users.group_file.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2] == str(gid):
            return fields[0]
    raise WodmailError(f"its group {gid} is not in {users.group_file}")


def _has_user(users: UserDb, name: str) -> bool:
    try:
        users.user(name)
    except WodmailError:
        return False
    return True


def _range(config: Config) -> range:
    return range(config.students.min, config.students.max + 1)


def _compact(numbers: list[int]) -> str:
    """[3, 7, 8, 9] -> '3, 7-9'."""
    spans: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(spans)


def _folders(checks: _Checks) -> None:
    config = checks.config
    named: list[tuple[str, Path | None, bool]] = [
        ("notebooks.public", config.notebooks.public, True),
        ("notebooks.private", config.notebooks.private, True),
        ("notebooks.public_vars", config.notebooks.public_vars, False),
        ("notebooks.private_vars", config.notebooks.private_vars, False),
        ("scripts.public", config.scripts.public, False),
        ("scripts.private", config.scripts.private, False),
        ("handlers.private", config.handlers.private, False),
        ("students_dir", config.students_dir, True),
        ("accounts.root", config.accounts.root, True),
    ]
    named += [(f"accounts.skel[{i}]", path, True) for i, path in enumerate(config.accounts.skel)]
    if all(path is None for _, path, _ in named[:2]):
        checks.add("warn", "notebooks", "no notebooks folder: workshop names are not checked",
                   "notebooks.public")
    for key, path, needed in named:
        if path is None:
            continue
        if path.is_dir():
            checks.add("ok", key, str(path), key)
        elif not needed and not path.exists() and checks.config.from_installation(key):
            # The installation names it, and a stock install has none (e.g. no
            # ansible/production): copy_folder.yml then had nothing there either.
            checks.add("ok", key, f"none ({path} does not exist)", key)
        else:
            checks.add("FAIL" if needed else "warn", key, f"{path} is not a folder", key)
    _state_dir(checks)


def _state_dir(checks: _Checks) -> None:
    state = checks.config.state_dir
    existing = next((p for p in (state, *state.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and _writable(existing):
        detail = str(state) if existing == state else f"{state} (will be made in {existing})"
        checks.add("ok", "state_dir", detail, "state_dir")
    else:
        checks.add("FAIL", "state_dir", f"{state} cannot be written by this user", "state_dir")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def _homes(checks: _Checks) -> None:
    config = checks.config
    missing = [n for n in _range(config) if not (config.students_dir / f"student{n}").is_dir()]
    what = f"homes student{config.students.min}..student{config.students.max}"
    if not config.students_dir.is_dir():
        return  # reported with the folders
    if missing:
        checks.add("FAIL", what, f"missing in {config.students_dir}: student{_compact(missing)}",
                   "students_dir")
    else:
        checks.add("ok", what, f"all in {config.students_dir}", "students_dir")
    open_homes = [n for n in _range(config) if n not in missing
                  and (config.students_dir / f"student{n}").lstat().st_mode & 0o007]
    if open_homes:
        checks.add("warn", what, f"open to other users: student{_compact(open_homes)}"
                   " (students could read each other's work; the next order for each"
                   " closes its home)", "students_dir")


# -- tools, hooks, port, senders ---------------------------------------------------------------


def _tools(checks: _Checks) -> None:
    from wodmail.host.accounts import find_tool

    config = checks.config
    needed = []
    if config.accounts.linux_passwords:
        needed.append(("chpasswd", "accounts.linux_passwords"))
    if config.accounts.admin_user:
        needed.append(("setfacl", "accounts.admin_user"))
    for tool, key in needed:
        found = find_tool(tool)
        if found:
            checks.add("ok", f"tool {tool}", found, key)
        else:
            checks.add("FAIL", f"tool {tool}", "not found (apt-get install "
                       f"{'passwd' if tool == 'chpasswd' else 'acl'})", key)


def _hooks(checks: _Checks) -> None:
    from wodmail.errors import ConfigurationError
    from wodmail.hooks import phases as hooks

    try:
        hooks.Hooks.from_config(checks.config)
    except ConfigurationError as exc:
        checks.add("FAIL", "hooks", str(exc), "scripts.public")
        return
    problems = hooks.check(checks.config)
    for problem in problems:
        checks.add("warn", "hooks", problem, "scripts.public")
    if not problems:
        checks.add("ok", "hooks", "every hook script found is executable", "scripts.public")


def _port(checks: _Checks) -> None:
    for host in checks.config.listen.hosts:
        _port_of(checks, host)


def _port_of(checks: _Checks, host: str) -> None:
    listen = checks.config.listen
    where = f"{host}:{listen.port}"
    if listen.port == 0:
        checks.add("ok", "listen", f"{host}: any free port", "listen.port")
        return
    problem = _bind_problem(host, listen.port)
    if problem is not None:
        if problem.errno != errno.EADDRINUSE:
            checks.add("FAIL", "listen", f"{where}: {problem.strerror or problem}",
                       "listen.port")
            return
        greeting = _greeting(host, listen.port)
        if "wodmail" in greeting or "listen.local_users" in greeting:  # or refusing us
            checks.add("ok", "listen", f"{where} is held by a running wodmail", "listen.port")
        else:
            shown = greeting or "no SMTP greeting"
            checks.add("FAIL", "listen", f"{where} is taken by another program ({shown}): "
                       "move Postfix (or it) off that port", "listen.port")
        return
    checks.add("ok", "listen", f"{where} is free", "listen.port")


def _portal_allowed(checks: _Checks) -> None:
    """Would the portal's orders get past allowed_networks? (It connects to the backend's
    address from the API-DB host: WODAPIDBFQDN, else the portal URL's host.)"""
    config = checks.config
    name = _portal_host(checks)
    if not name:
        return
    addresses = resolve_addresses(name)
    if not addresses:
        checks.add("warn", "portal's address", f"{name} does not resolve: cannot tell whether "
                   "allowed_networks lets the portal's orders in", "allowed_networks")
        return
    refused = [a for a in addresses if not in_networks(a, config.networks())]
    if refused:
        checks.add("warn", "portal's address", f"{name} ({', '.join(refused)}) is outside "
                   "allowed_networks: the portal's orders would be refused at connect",
                   "allowed_networks")
    else:
        checks.add("ok", "portal's address", f"{name} ({', '.join(addresses)}) is in "
                   "allowed_networks", "allowed_networks")


def _portal_host(checks: _Checks) -> str:
    installation = checks.config.wod_installation
    fqdn = installation.values.get("WODAPIDBFQDN") if installation is not None else None
    if fqdn:
        return str(fqdn)
    return urlsplit(checks.config.portal.url or "").hostname or ""


def _bind_problem(host: str, port: int) -> OSError | None:
    """Why `serve` could not listen on host:port now (None: it could)."""
    try:
        with socket.create_server((host, port), reuse_port=False):
            return None
    except OSError as exc:
        return exc


def _status_port(checks: _Checks) -> None:
    address = checks.config.status.address()
    if address is None:
        return
    host, port = address
    where = f"{host}:{port}"
    if port == 0:
        checks.add("ok", "status port", f"{host}: any free port", "status.listen")
        return
    problem = _bind_problem(host, port)
    if problem is None:
        checks.add("ok", "status port", f"{where} is free", "status.listen")
    elif problem.errno == errno.EADDRINUSE and _answers_healthz(host, port):
        checks.add("ok", "status port", f"{where} is held by a running wodmail", "status.listen")
    elif problem.errno == errno.EADDRINUSE:
        checks.add("FAIL", "status port", f"{where} is taken by another program: `serve` "
                   "would run without its status listener; free it or change status.listen",
                   "status.listen")
    else:
        checks.add("FAIL", "status port", f"{where}: {problem.strerror or problem}",
                   "status.listen")


def _answers_healthz(host: str, port: int) -> bool:
    """Does a wodmail status listener answer there (its /healthz JSON names a journal)?"""
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            shown = f"[{host}]" if ":" in host else host
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {shown}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            answer = b""
            while len(answer) < 65536 and (chunk := sock.recv(4096)):
                answer += chunk
    except OSError:
        return False
    return b'"journal"' in answer and b'"checks"' in answer


def _local_users(checks: _Checks) -> None:
    listen = checks.config.listen
    users = localusers.resolve(listen.local_users, checks.config.accounts.admin_user)
    detail = ", ".join(users.shown) or "nobody"
    status: Status = "ok"
    if users.unknown:
        status = "FAIL" if users.explicit else "warn"
        detail += f"; no such user on this host: {', '.join(users.unknown)}"
    checks.add(status, "listen.local_users in force",
               f"{detail} (any other local user gets 554)", "listen.local_users")


def _greeting(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            return sock.recv(200).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _status(checks: _Checks) -> None:
    settings = checks.config.status
    if settings.listen is None:
        checks.add("ok", "status listener", "off", "status.listen")
        return
    if settings.token_file is not None:
        try:
            token = read_token(settings.token_file)
        except TokenFileError as exc:
            checks.add("FAIL", "status.token_file", f"{exc.path}: {exc.problem}",
                       "status.token_file")
            return
        checks.add("ok", "status.token_file", f"{settings.token_file}: a token of "
                   f"{len(token)} characters, required on every path but /healthz",
                   "status.token_file")
    elif settings.loopback_only():
        checks.add("ok", "status listener", f"{settings.listen}, loopback only, no token: "
                   "local users (students too) can read /jobs (no hook output, e-mail "
                   "addresses masked)", "status.listen")
    else:
        checks.add("warn", "status listener", f"{settings.listen} is reachable beyond "
                   "loopback and status.token_file is not set: anyone who reaches it reads "
                   "every order; set status.token_file (or listen on 127.0.0.1 behind an "
                   "authenticating proxy)", "status.listen")


def _senders(checks: _Checks) -> None:

    config = checks.config
    try:
        senders = config.senders(load_base_variables(config))
    except WodmailError:
        return  # the variables' own failure is reported by `_others`
    if "allowed_senders" in config.model_fields_set or checks.origins.get(
            "allowed_senders", "default") != "default":
        source = "allowed_senders"
    else:
        source = "WODSENDER" if senders else "nothing"
    status: Status = "ok" if senders else "warn"
    shown = ", ".join(senders) if senders else "[] (orders from any sender are accepted)"
    checks.add(status, "allowed_senders in force", f"{shown} (from {source})",
               "allowed_senders")
    if config.relay.host:
        _relay_senders(checks, config.relay_senders(load_base_variables(config)))


def _relay_senders(checks: _Checks, senders: list[str]) -> None:
    """Whom the relay relays for: relay.allowed_senders, else the order senders and WODSENDER."""
    config = checks.config
    source = ("relay.allowed_senders" if config.relay.allowed_senders is not None
              else "allowed_senders and WODSENDER")
    shown = ", ".join(senders) if senders else "[] (every mail to relay is refused)"
    limits = (f"; at most {config.relay.max_recipients} recipients a mail and"
              f" {config.relay.max_per_minute} mails a minute per client")
    checks.add("ok" if senders else "warn", "relay.allowed_senders in force",
               f"{shown} (from {source}){limits}", "relay.allowed_senders")


def _others(checks: _Checks) -> None:
    """What `check` finds beyond the above (variables, relay, shadowed vars)."""

    errors, warnings = check(checks.config)
    for error in errors:
        checks.add("FAIL", "config", error)
    for warning in warnings:
        checks.add("warn", "config", warning)


def _appliances(checks: _Checks) -> None:
    """Each appliance the variables name (IP-WKSHP-*): login, host key, sudo, docker."""
    addresses = _appliance_addresses(checks)
    if not addresses:
        return
    from wodmail.appliances import AppliancePool
    from wodmail.appliances.probe import probe

    config = checks.config
    settings = config.appliances.model_copy(update={"connect_timeout_seconds": min(
        config.appliances.connect_timeout_seconds, PEER_TIMEOUT_SECONDS)})
    pool = AppliancePool.from_config(config.model_copy(update={"appliances": settings}),
                                     record_keys=False)

    images = _appliance_images(config, addresses)

    async def probe_all() -> list[list[Any]]:
        try:
            return list(await asyncio.gather(*(probe(pool, address, key, images[address])
                                               for address, key in addresses.items())))
        finally:
            await pool.aclose()

    for findings in asyncio.run(probe_all()):
        for finding in findings:
            checks.add(finding.status, finding.what, finding.detail, "appliances.user")


def _appliance_images(config: Config, addresses: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """The images each appliance's workshop modules build from (their `IMAGES`)."""
    from wodmail.hooks.phases import Hooks

    try:
        hooks = Hooks.from_config(config)
    except WodmailError:  # reported by the hooks check
        return {address: () for address in addresses}
    return {address: hooks.images(key.removeprefix("IP-")) for address, key in addresses.items()}


def _appliance_addresses(checks: _Checks) -> dict[str, str]:
    """The base address of every appliance workshop, and the variable giving it; a variable
    that is no address is a warning (the orders needing it will fail on it)."""
    import ipaddress

    from wodmail.lifecycle.verbs import resolve
    from wodmail.templating.renderer import Renderer

    try:
        variables = load_base_variables(checks.config)
    except WodmailError:
        return {}
    renderer = Renderer(variables)
    found: dict[str, str] = {}
    for key in sorted(k for k in variables if str(k).startswith("IP-WKSHP-")):
        try:
            value = str(resolve(renderer, key)).strip()
            ipaddress.IPv4Address(value)
        except (KeyError, ValueError):
            checks.add("warn", f"appliance {key}", f"{variables[key]!r} is not an IPv4 address "
                       "(the stock placeholder x.y.z.t?): its workshop's orders will fail")
            continue
        found.setdefault(value, key)
    return found


STEPS: tuple[Callable[[_Checks], None], ...] = (
    _urls, _portal_login, _portal_allowed, _hub_token, _users, _folders, _homes, _tools,
    _hooks, _port, _status, _status_port, _local_users, _senders, _appliances, _others,
)


# -- what the variables and relay settings would break ----------------------------------------


def check(config: Config) -> tuple[list[str], list[str]]:
    """What the variables and the relay settings would break (errors) or surprise an admin
    with (warnings); the checks above look at the rest of the world."""
    errors: list[str] = []
    warnings: list[str] = []
    try:
        load_base_variables(config)
    except WodmailError as exc:
        errors.append(str(exc))
    warnings.extend(_shadowed_vars(config))
    if config.wod_installation is not None:
        refusal = config.wod_installation.vault.refusal()
        if refusal is not None:
            errors.append(f"vault secret: {refusal}")
        warnings.extend(config.wod_installation.check())
    warnings.extend(_relay_warnings(config))
    return errors, warnings


def _relay_warnings(config: Config) -> list[str]:
    if not config.relay.host:
        return []
    try:
        variables = load_base_variables(config)
    except WodmailError:
        return []
    warnings = []
    if not config.relay_senders(variables):
        warnings.append(
            "relay.host is set and relay.allowed_senders is empty (no allowed_senders, no"
            " WODSENDER): every mail to relay is refused; set relay.allowed_senders to the"
            " portal's WODSENDER"
        )
    if config.relay.order_recipients is None:
        recipients = ", ".join(order_recipients(config, variables))
        warning = f"relay.order_recipients not set: mail to {recipients} is taken as orders"
        if not any(variables.get(key) for key in ("WODBEFQDN", "WODBEEXTFQDN")):
            warning += " (WODBEFQDN is unknown: set relay.order_recipients)"
        warnings.append(warning + f"; mail to anyone else is relayed to {config.relay.host}")
    return warnings


def _shadowed_vars(config: Config) -> list[str]:
    """`vars` keys the installation also passes as `-e`: as under ansible-playbook, its win."""
    installation = config.wod_installation
    if installation is None:
        return []
    extra = installation.extra_variables()
    return [
        f"vars.{key} is overridden by the installation's {installation.origin(key)} "
        "(extra vars win, as they did for ansible-playbook)"
        for key in config.vars
        if key in extra
    ]


def describe(config: Config) -> dict[str, Any]:
    """What `wodmail check-config` prints: the effective settings, secrets masked."""
    data = config.model_dump(mode="json")
    secrets = (("portal", "password"), ("hub", "token"), ("accounts", "password"),
               ("relay", "password"))
    for section, key in secrets:
        if data.get(section, {}).get(key):
            data[section][key] = "***"
    ldap = data.get("accounts", {}).get("ldap", {})
    if ldap.get("password"):
        ldap["password"] = "***"
    return data
