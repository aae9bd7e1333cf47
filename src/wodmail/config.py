"""wodmail's configuration: one YAML file, validated by pydantic.

Every key has an embedded default, so `wodmail serve` runs with no file at all. Unknown keys
are refused (a typo must not silently fall back to a default). Errors name the file and the
key path, e.g. ``/etc/wodmail.yml: students.max: Input should be a valid integer``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from wodmail.errors import ConfigurationError, TemplateError
from wodmail.installation.reader import (
    DEFAULT_WOD_SH,
    DEFAULT_WOD_YML,
    Installation,
    read_installation,
)
from wodmail.templating.varsfiles import load_vars_file

CONFIG_ENV = "WODMAIL_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Section):
    # One address or several (with an installation: WODBEFQDN's addresses and loopback, as
    # Postfix's inet_interfaces = WODBEFQDN, localhost).
    host: str | list[str] = "127.0.0.1"
    port: int = Field(10025, ge=0, le=65535)
    # Sessions at once; one more gets 421. Sized with the unit's LimitNOFILE (open files):
    # each session holds one descriptor, plus some for the journal, hooks and peers.
    max_connections: int = Field(256, ge=1, le=65536)
    # Below max_connections, so that no single client can take every session: a remote
    # client per address (the portal sends one connection per mail, all at once in a bulk
    # action), a local one per uid (an admin tool or script).
    max_connections_per_ip: int = Field(128, ge=1, le=65536)
    max_connections_per_uid: int = Field(64, ge=1, le=65536)
    # Until the first command (HELO, EHLO, or MAIL for the netcat tool); then the idle timeout.
    greeting_timeout_seconds: float = Field(30.0, gt=0)
    # Connections the kernel queues before wodmail accepts them (listen(2)'s backlog), also
    # for the socket wodmail.socket passes: asyncio listens on it again, and without this its
    # own 100 would replace the socket unit's Backlog=1024. The kernel caps it at
    # net.core.somaxconn (4096 on current kernels).
    backlog: int = Field(1024, ge=1, le=65535)
    # Local users (names or uids) whose connections may send orders; unset: root,
    # accounts.admin_user (WODUSER) and wodmail's own user. Anyone else gets 554 at connect.
    local_users: list[str | int] | None = None

    @field_validator("host")
    @classmethod
    def _some_host(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("listen.host: at least one address")
        return value

    @property
    def hosts(self) -> list[str]:
        """Every address to listen on."""
        return [self.host] if isinstance(self.host, str) else list(self.host)

    @property
    def local_host(self) -> str:
        """The address an admin tool on this machine connects to: a loopback one if listed."""
        hosts = self.hosts
        loopback = [h for h in hosts if h in ("127.0.0.1", "::1", "localhost")]
        chosen = (loopback or hosts)[0]
        return "127.0.0.1" if chosen in ("0.0.0.0", "") else "::1" if chosen == "::" else chosen

    @field_validator("local_users", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # YAML reads `yes`/`no` as booleans, which would otherwise pass as uids 1 and 0.
        for entry in value if isinstance(value, list) else []:
            if isinstance(entry, bool):
                raise ValueError(f"not a user name or uid: {entry!r}")
        return value

    @field_validator("local_users")
    @classmethod
    def _users(cls, value: list[str | int] | None) -> list[str | int] | None:
        for entry in value or []:
            if isinstance(entry, int) and entry < 0:
                raise ValueError(f"not a uid: {entry}")
            if isinstance(entry, str) and (not entry or any(c in entry for c in ": \t\n,")):
                raise ValueError(f"not a user name: {entry!r}")
        return value


class Students(_Section):
    min: int = Field(1, ge=0, description="USERMIN")
    max: int = Field(20, ge=0, description="USERMAX")
    base_id: int = Field(0, ge=0, description="BASESTDID: API-DB id of student N is N + base_id")

    @model_validator(mode="after")
    def _ordered(self) -> Students:
        if self.min > self.max:
            raise ValueError(f"students.min ({self.min}) is greater than students.max ({self.max})")
        return self


class Notebooks(_Section):
    public: Path | None = None
    private: Path | None = None
    # Folders holding variables_<W>.yml; when unset, the workshop's own folder is searched.
    public_vars: Path | None = None
    private_vars: Path | None = None
    # Wall time one template file may take to render (regex filters included).
    render_timeout_seconds: float = Field(30.0, gt=0)

    def folder_of(self, content: str) -> Path | None:
        """The workshop folder: the public tree first, else the private one."""
        for tree in (self.public, self.private):
            if tree is not None and (tree / content).is_dir():
                return tree / content
        return None


class Portal(_Section):
    url: str | None = None
    user: str = "moderator"
    password: str = ""
    timeout_seconds: float = Field(10.0, gt=0)
    token_ttl_seconds: float = Field(180.0, gt=0)


class Hub(_Section):
    url: str | None = None
    token: str = ""
    # Above the hub's own slow_spawn_timeout/slow_stop_timeout (10 s), after which it answers 202.
    timeout_seconds: float = Field(30.0, gt=0)


class Ldap(_Section):
    server: str | None = None
    port: int = 389
    base_dn: str = ""
    bind_dn: str = "cn=Directory Manager"
    password: str = ""
    timeout_seconds: float = Field(10.0, gt=0)
    prefixes: dict[str, str] = Field(
        default_factory=dict, description="login prefix per workshop folder (default student)"
    )


class Accounts(_Section):
    root: Path = Path("/")
    linux_passwords: bool = True
    password: str | None = None
    password_length: int = Field(16, ge=8, le=128)
    password_alphabet: str = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    admin_user: str | None = None
    skel: list[Path] = Field(default_factory=list)
    kill_grace_seconds: float = Field(5.0, ge=0)
    ssh_key_bits: int = Field(3072, ge=2048, le=8192)
    ssh_key_pool: int | None = Field(
        None, ge=0, description="keys made ahead of time; default: one per student of the range"
    )
    ldap: Ldap = Field(default_factory=Ldap)


class Scripts(_Section):
    public: Path | None = None
    private: Path | None = None
    timeout_seconds: float = Field(300.0, gt=0)
    run_as: str | None = Field(
        None, description="user legacy scripts run as (root only); default accounts.admin_user"
        " (WODUSER); \"\": wodmail's own user"
    )


class Handlers(_Section):
    private: Path | None = None


class HookSettings(_Section):
    use_scripts: list[str] = Field(
        default_factory=list,
        description="workshops (WKSHP-X) whose stock public scripts run instead of the "
        "public handler module: the way back to the scripts, per workshop",
    )

    @field_validator("use_scripts")
    @classmethod
    def _workshop_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"(WKSHP|CHLG)-[A-Za-z0-9_.-]+", name):
                raise ValueError(f"{name!r} is not a workshop name (WKSHP-X)")
        return [re.sub(r"^CHLG-", "WKSHP-", name) for name in names]


class Dispatch(_Section):
    concurrency: int = Field(8, ge=1, le=1024)
    retry_deadline_seconds: float = Field(300.0, ge=0)
    retry_base_seconds: float = Field(1.0, gt=0)
    retry_max_seconds: float = Field(30.0, gt=0)
    cleaned_wait_seconds: float = Field(900.0, ge=0)
    cleaned_poll_seconds: float = Field(10.0, gt=0)
    queue_poll_seconds: float = Field(
        1.0, gt=0, description="how often the daemon looks for orders `wodmail retry` queued"
    )
    # Keep below the unit's TimeoutStopSec (45 s) with room for closing sessions (5 s).
    stop_grace_seconds: float = Field(20.0, ge=0)


class Relay(_Section):
    """Mail for anyone but the order mailbox goes to this smarthost (off while host is unset)."""

    host: str | None = None
    port: int = Field(25, ge=1, le=65535)
    order_recipients: list[str] | None = Field(
        None,
        description="user@domain or @domain; default: @ the backend's names (as Postfix's "
        "mydestination was), see relay.default_order_recipients",
    )
    timeout_seconds: float = Field(30.0, gt=0)
    retry_base_seconds: float = Field(30.0, gt=0)
    retry_max_seconds: float = Field(900.0, gt=0)
    give_up_seconds: float = Field(86400.0, ge=0)
    tls: Literal["none", "starttls", "tls"] = "none"
    ca_file: Path | None = Field(None, description="CAs to verify the smarthost; default: system")
    user: str | None = None
    password: str = ""
    allowed_senders: list[str] | None = Field(
        None,
        description="senders mail is relayed for (envelope and From header); default: the "
        "order senders in force and WODSENDER (the portal sends as WODSENDER); []: nobody",
    )
    max_recipients: int = Field(10, ge=1, description="recipients of one relayed mail")
    max_per_minute: int = Field(
        60, ge=1, description="mails relayed per client address (and local uid) in any minute"
    )

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> Relay:
        if self.user and self.tls == "none":
            raise ValueError("relay.user needs relay.tls starttls or tls (no password in clear)")
        return self

    @field_validator("order_recipients")
    @classmethod
    def _recipients(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [entry.strip().lower() for entry in value]
        for entry in cleaned:
            local, at, domain = entry.rpartition("@")
            if not at or not domain or " " in entry or "@" in local:
                raise ValueError(f"not user@domain or @domain: {entry!r}")
        return cleaned

    @field_validator("allowed_senders")
    @classmethod
    def _relay_senders(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [sender.strip().lower() for sender in value]
        for sender in cleaned:
            local, at, domain = sender.rpartition("@")
            if not local or not domain or " " in sender or sender.startswith("<"):
                raise ValueError(f"not an address (user@domain): {sender!r}")
        return cleaned


class Appliances(_Section):
    """How wodmail reaches workshop appliances over ssh (see `wodmail.appliances`)."""

    user: str | None = Field(None, description="default: accounts.admin_user (WODUSER)")
    key: Path | None = Field(
        None, description="private key; default: the user's ~/.ssh/id_ed25519, else id_rsa"
    )
    known_hosts: Path | None = Field(
        None, description="an OpenSSH known_hosts file used as is (unknown hosts refused); "
        "default: <state_dir>/appliance_known_hosts, pinned on first use"
    )
    port: int = Field(22, ge=1, le=65535)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    command_timeout_seconds: float = Field(120.0, gt=0)
    idle_seconds: float = Field(300.0, gt=0)
    # Below OpenSSH's MaxSessions (10): sshd refuses channels past it.
    max_channels: int = Field(8, ge=1, le=64)
    container_network: Literal["published", "host"] = Field(
        "published", description="how per-student containers are reached: their ports "
        "published (production), or the appliance's own network (host: no bridge there)"
    )
    privileged_containers: bool = Field(
        True, description="run the containers the stock compose files made privileged "
        "(Docker101's Docker-in-Docker, Concourse) privileged; false on an engine that "
        "cannot start them (Docker-in-Docker then fails inside)"
    )
    ready_seconds: float = Field(
        120.0, gt=0, description="how long a student's container may take to answer"
    )


class InstallationSettings(_Section):
    """Where the WoD installation is; present in the file means: read it (see installation)."""

    wod_sh: Path = DEFAULT_WOD_SH
    backend_dir: Path | None = Field(None, description="default: WODBEDIR of wod.sh")
    private_dir: Path | None = Field(None, description="default: WODPRIVDIR of wod.sh")
    group: str | None = Field(None, description="default: WODGROUP of wod.sh")
    wod_yml: Path = DEFAULT_WOD_YML


class Status(_Section):
    # host:port of the status listener (/healthz, /jobs, /metrics, /); null: none.
    listen: str | None = "127.0.0.1:9925"
    # Host header values accepted besides the listen address (and, on loopback, localhost,
    # 127.0.0.1 and [::1]): the names a reverse proxy or an admin's browser uses.
    hostnames: list[str] = Field(default_factory=list)
    # Connections at once; one more is closed at once. Each holds a file descriptor.
    max_connections: int = Field(16, ge=1, le=1024)
    # How long a client has to send its whole request (idle connections end then).
    timeout_seconds: float = Field(5.0, gt=0, le=300)
    # A bearer token (the file's first line) required on every path but /healthz.
    token_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            split_address(value)
        return value

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, value: list[str]) -> list[str]:
        names = []
        for entry in value:
            try:
                host, port = split_host(entry)
            except ValueError as exc:
                raise ValueError(f"{entry!r}: {exc}") from None
            names.append(host if port is None else f"{host}:{port}")
        return names

    def address(self) -> tuple[str, int] | None:
        return None if self.listen is None else split_address(self.listen)

    def loopback_only(self) -> bool:
        """Whether the listener can be reached from this machine only (or is off)."""
        address = self.address()
        return address is None or is_loopback(address[0], wildcard=False)


def split_address(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:port`) into its parts; ValueError saying what is wrong."""
    host, colon, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not host:port: {value!r}")
    return host, int(port)


_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def split_host(value: str) -> tuple[str, int | None]:
    """An HTTP Host value (`name`, `name:port`, `[v6]`, `[v6]:port`) as (host, port): the
    host in lower case, without a trailing dot, IPv6 compressed in brackets. ValueError
    saying what is wrong."""
    text = value.strip().lower()
    if "/" in text or "@" in text:
        raise ValueError("not a host name, address, or host:port (no scheme, user or path)")
    host, rest = _bracketed_host(text) if text.startswith("[") else _named_host(text)
    if not rest:
        return host, None
    port = rest[1:]
    if not rest.startswith(":") or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ValueError("the port is not a number from 0 to 65535")
    return host, int(port)


def _bracketed_host(text: str) -> tuple[str, str]:
    inside, bracket, rest = text[1:].partition("]")
    try:
        address = ipaddress.IPv6Address(inside) if bracket else None
    except ValueError:
        address = None
    if address is None:
        raise ValueError("not an IPv6 address in brackets")
    return f"[{address.compressed}]", rest


def _named_host(text: str) -> tuple[str, str]:
    name, colon, port = text.partition(":")
    if ":" in port:
        raise ValueError("more than one ':' (an IPv6 address goes in brackets)")
    host = name.removesuffix(".")
    if not _HOST_NAME.fullmatch(host):
        raise ValueError("not a host name, address, or host:port")
    return host, colon + port


def url_host(host: str) -> str:
    """A listen address as a Host header writes it: IPv6 in brackets, lower case."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host.lower().removesuffix(".")
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def is_loopback(host: str, *, wildcard: bool) -> bool:
    """Whether listening on `host` listens on loopback (`wildcard`: count 0.0.0.0 and ::,
    which include it). Names other than localhost are not resolved: they may be anywhere."""
    if host.lower().removesuffix(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or (wildcard and address.is_unspecified)


class Config(_Section):
    listen: Listen = Field(default_factory=Listen)
    status: Status = Field(default_factory=Status)
    state_dir: Path = Path("/var/lib/wodmail")
    allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    allowed_senders: list[str] = Field(default_factory=list)
    # Which sender must be in allowed_senders: the envelope's (MAIL FROM), the header From,
    # or both (the envelope, and the header From too when the mail has one).
    allowed_senders_check: Literal["envelope", "header", "both"] = "both"
    students: Students = Field(default_factory=Students)
    notebooks: Notebooks = Field(default_factory=Notebooks)
    max_message_bytes: int = Field(65536, ge=1024)
    max_refusals_per_peer: int = Field(
        1000, ge=0, description="refusals kept per client address, newest first; 0: no cap"
    )
    dedup_window_seconds: float = Field(120.0, ge=0)
    students_dir: Path = Path("/student")
    portal: Portal = Field(default_factory=Portal)
    hub: Hub = Field(default_factory=Hub)
    accounts: Accounts = Field(default_factory=Accounts)
    scripts: Scripts = Field(default_factory=Scripts)
    handlers: Handlers = Field(default_factory=Handlers)
    hooks: HookSettings = Field(default_factory=HookSettings)
    dispatch: Dispatch = Field(default_factory=Dispatch)
    relay: Relay = Field(default_factory=Relay)
    appliances: Appliances = Field(default_factory=Appliances)
    vars: dict[str, Any] = Field(default_factory=dict)
    group_vars: list[Path] = Field(default_factory=list)
    installation: InstallationSettings | None = None
    source: Path | None = Field(None, exclude=True, description="the file this was read from")
    # The installation read at load time, and where each installation-given value came from.
    _installation: Installation | None = PrivateAttr(None)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _explicit: frozenset[str] = PrivateAttr(frozenset())
    _source_name: str = PrivateAttr("wodmail.yml")

    def from_installation(self, key: str) -> bool:
        """Is this setting's value the installation's (not wodmail.yml's, not a default)?"""
        return key in self._origins and key not in self._explicit

    @property
    def wod_installation(self) -> Installation | None:
        """The WoD installation read at load time (None without an `installation` block)."""
        return self._installation

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network: {net!r} ({exc})") from None
        return value

    @field_validator("allowed_senders")
    @classmethod
    def _senders(cls, value: list[str]) -> list[str]:
        return [sender.strip().lower() for sender in value]

    def senders(self, variables: dict[str, Any]) -> list[str]:
        """allowed_senders; when the key is absent, WODSENDER from the group_vars, as the old
        backend meant to enforce."""
        if "allowed_senders" in self.model_fields_set:
            return self.allowed_senders
        return _wodsender(variables)

    def relay_senders(self, variables: dict[str, Any]) -> list[str]:
        """relay.allowed_senders; when unset, the order senders in force and WODSENDER: the
        portal sends participants' mail as its WODSENDER (the API-DB's own setting, which the
        backend cannot read; the installation gives both the same value)."""
        if self.relay.allowed_senders is not None:
            return self.relay.allowed_senders
        return list(dict.fromkeys([*self.senders(variables), *_wodsender(variables)]))

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(net, strict=False) for net in self.allowed_networks]

    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite3"

    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.sqlite3"


def _wodsender(variables: dict[str, Any]) -> list[str]:
    """WODSENDER as a one-address list, if it is one (not an unrendered template)."""
    value = variables.get("WODSENDER")
    if isinstance(value, str) and "@" in value and "{" not in value:
        return [value.strip().lower()]
    return []


def _format_errors(
    source: str, exc: ValidationError, origins: dict[str, str], explicit: dict[str, Any]
) -> str:
    """One line per error, naming the file (or the installation variable) and the key."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        where = source
        if key in origins and not _has_path(explicit, key):
            where = origins[key]
        lines.append(f"{where}: {key}: {error['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validates an already-loaded mapping; errors name `source` and the key path.

    With an `installation` block, the installation is read and gives the defaults of the
    keys it defines (explicit keys still win); `provenance()` then tells where each
    effective value came from.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: the top level must be a mapping of keys")
    installation = None
    origins: dict[str, str] = {}
    merged = data
    if "installation" in data:
        installation = _read_installation(data, source)
        defaults, origins = installation.config_defaults()
        merged = _deep_merge(defaults, data)
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigurationError(_format_errors(source, exc, origins, data)) from None
    config._installation = installation
    config._origins = origins
    config._explicit = frozenset(key for key in _leaf_keys(config) if _has_path(data, key))
    config._source_name = source
    return config


def _read_installation(data: dict[str, Any], source: str) -> Installation:
    try:
        settings = InstallationSettings.model_validate(data.get("installation") or {})
    except ValidationError as exc:
        errors = _format_errors(source, exc, {}, {})
        prefixed = errors.replace(f"{source}: ", f"{source}: installation.")
        raise ConfigurationError(prefixed) from None
    accounts = data.get("accounts")
    root = accounts.get("root", "/") if isinstance(accounts, dict) else "/"
    return read_installation(
        settings.wod_sh,
        backend_dir=settings.backend_dir,
        private_dir=settings.private_dir,
        group=settings.group,
        wod_yml=settings.wod_yml,
        accounts_root=Path(root),
    )


def _deep_merge(defaults: dict[str, Any], explicit: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in explicit.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _leaf_keys(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted keys of every setting (sections descended into, mappings like `vars` kept whole)."""
    keys = []
    for name, info in type(model).model_fields.items():
        if info.exclude:
            continue
        value = getattr(model, name)
        if isinstance(value, _Section):
            keys.extend(_leaf_keys(value, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _has_path(data: Any, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def provenance(config: Config) -> dict[str, str]:
    """Every effective setting (dotted key) and where it came from: the config file,
    the installation (variable and file), or `default`."""
    origins = {}
    for key in _leaf_keys(config):
        if key in config._explicit:
            origins[key] = str(config.source or config._source_name)
        elif key in config._origins:
            origins[key] = config._origins[key]
        else:
            origins[key] = "default"
    return origins


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where (line, column) and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return " ".join(str(problem).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


SYSTEM_CONFIG = Path("/etc/wodmail/wodmail.yml")


def config_location(
    path: Path | str | None = None, *, discover: bool = True
) -> tuple[Path | None, str]:
    """The config file an admin command reads, and why: `path` (--config), else
    $WODMAIL_CONFIG, else /etc/wodmail/wodmail.yml when it exists (the daemon's, as the
    README installs it), else none: the built-in defaults."""
    if path is not None:
        return Path(path), "--config"
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]), f"${CONFIG_ENV}"
    if discover and SYSTEM_CONFIG.is_file():
        return SYSTEM_CONFIG, "the daemon's config"
    return None, "no config file"


def describe_location(path: Path | str | None = None, *, discover: bool = True) -> str:
    """One line for an admin: which config a command without --config used."""
    found, why = config_location(path, discover=discover)
    if found is None:
        return f"no config file ({CONFIG_ENV} unset, no {SYSTEM_CONFIG}): the built-in defaults"
    return f"config {found} ({why})"


def load_config(path: Path | str | None = None, *, discover: bool = True) -> Config:
    """Reads the config found by `config_location`, else the embedded defaults."""
    path, _why = config_location(path, discover=discover)
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from None
    config = parse_config(data, str(path))
    return config.model_copy(update={"source": path})


def load_base_variables(config: Config) -> dict[str, Any]:
    """Every template variable of the backend that no order changes, later winning: the
    installation's (inventories, facts, /etc/wod.yml), wodmail's `group_vars` files in
    order, `vars`, then the installation's `-e` extra vars (which win, as in Ansible)."""
    installation = config.wod_installation
    merged: dict[str, Any] = installation.base_variables() if installation else {}
    vault = installation.vault if installation else None
    for path in config.group_vars:
        try:
            merged.update(load_vars_file(path, vault))
        except TemplateError as exc:
            raise ConfigurationError(f"group_vars: {exc}") from None
    merged.update(config.vars)
    if installation is not None:
        merged.update(installation.extra_variables())
    return merged
