"""Appliance host keys, pinned: a key that changed is refused, naming both fingerprints.

Two sources, one at a time:

- `appliances.known_hosts` when configured: an OpenSSH known_hosts file, used as is (hashed
  names, `@cert-authority` and `@revoked` lines included). A host it does not list is
  refused; wodmail never writes to it.
- else wodmail's own `<state_dir>/appliance_known_hosts` (the same format, mode 0600): the
  first key an appliance offers is recorded there (trust on first use) and every later
  connection must offer that key. `wodmail appliance forget ADDRESS` removes a pin after
  an appliance was reinstalled.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncssh
import structlog

from wodmail.errors import PeerMisconfigured

log = structlog.get_logger(__name__)

PINS_FILE = "appliance_known_hosts"
DEFAULT_PORT = 22

Verdict = Literal["pinned", "new", "changed", "unknown"]


def host_pattern(address: str, port: int) -> str:
    """How known_hosts names a host: `addr`, or `[addr]:port` off port 22."""
    return address if port == DEFAULT_PORT else f"[{address}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


@dataclass
class Judgement:
    """What an appliance offered at one connection, and what was expected of it."""

    offered: str = ""
    verdict: Verdict | None = None
    expected: list[str] = field(default_factory=list)


class HostKeys:
    """The pins of every appliance. `record=False` (check-config) never writes a pin."""

    def __init__(self, state_dir: Path, configured: Path | None, *, record: bool = True) -> None:
        self.configured = configured
        self.pins = state_dir / PINS_FILE
        self.record = record

    @property
    def source(self) -> Path:
        return self.configured or self.pins

    def known(self, address: str) -> asyncssh.SSHKnownHosts:
        """asyncssh's `known_hosts` argument for one connection: the keys trusted now.

        Read at each connection, so a `forget` or an edit of the file applies to the next
        connection without a restart."""
        return self._load(address)

    def expected(self, address: str, port: int) -> list[asyncssh.SSHKey]:
        return list(self._load(address).match(address, address, _port_arg(port))[0])

    def judge(self, address: str, port: int, key: asyncssh.SSHKey) -> Judgement:
        """Called only for a key that none of the trusted ones matched."""
        expected = [fingerprint(k) for k in self.expected(address, port)]
        verdict: Verdict
        if expected:
            verdict = "changed"
        elif self.configured is not None:
            verdict = "unknown"
        else:
            verdict = "new"
        return Judgement(offered=fingerprint(key), verdict=verdict, expected=expected)

    def pin(self, address: str, port: int, key: asyncssh.SSHKey) -> None:
        """Record `key` for a host with no pin yet (trust on first use)."""
        if not self.record or self.configured is not None:
            return
        line = f"{host_pattern(address, port)} {key.export_public_key('openssh').decode().strip()}"
        with _locked(self.pins):
            lines = _read_lines(self.pins)
            if not any(_names(entry, address, port) for entry in lines):
                _write_lines(self.pins, [*lines, line])
        log.info("appliance host key pinned", appliance=address, fingerprint=fingerprint(key),
                 file=str(self.pins))

    def forget(self, address: str, port: int = DEFAULT_PORT) -> int:
        """Remove the pins of `address`; how many lines went."""
        if self.configured is not None:
            raise PeerMisconfigured(
                f"appliance {address}",
                f"appliances.known_hosts is {self.configured}, which wodmail never writes: "
                f"edit it (ssh-keygen -R {host_pattern(address, port)} -f {self.configured})",
            )
        if not self.pins.exists():
            return 0
        with _locked(self.pins):
            lines = _read_lines(self.pins)
            kept = [entry for entry in lines if not _names(entry, address, port)]
            if len(kept) != len(lines):
                _write_lines(self.pins, kept)
        return len(lines) - len(kept)

    def refusal(self, address: str, judged: Judgement) -> PeerMisconfigured:
        """The error for a key refused (changed, or unknown to a configured file)."""
        peer = f"appliance {address}"
        if judged.verdict == "unknown":
            return PeerMisconfigured(
                peer, f"its host key {judged.offered} is not in appliances.known_hosts "
                f"({self.configured}): add the appliance's key there (ssh-keyscan {address})")
        return PeerMisconfigured(
            peer, f"host key changed: expected {', '.join(judged.expected) or 'another key'}, "
            f"offered {judged.offered or 'a key of another type'}; if the appliance was "
            f"reinstalled, {self._how_to_accept(address)}")

    def _how_to_accept(self, address: str) -> str:
        if self.configured is not None:
            return f"put its new key in {self.configured} (ssh-keygen -R {address} -f " \
                   f"{self.configured}; ssh-keyscan {address})"
        return f"run `wodmail appliance forget {address}` (or remove its line from " \
               f"{self.pins}) and the next connection pins the new key"

    def _load(self, address: str) -> asyncssh.SSHKnownHosts:
        path = self.source
        try:
            text = path.read_text(encoding="utf-8") if path.exists() or self.configured else ""
        except OSError as exc:
            raise PeerMisconfigured(
                f"appliance {address}", f"cannot read the known hosts file {path}: "
                f"{exc.strerror or exc}") from None
        try:
            return asyncssh.import_known_hosts(text)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise PeerMisconfigured(
                f"appliance {address}", f"{path} is not a known_hosts file: {exc}") from None


def _port_arg(port: int) -> int | None:
    return None if port == DEFAULT_PORT else port


def _names(line: str, address: str, port: int) -> bool:
    fields = line.split()
    return bool(fields) and fields[0] == host_pattern(address, port)


def _read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    """Replace the file at once: a temp file in its folder, 0600, synced, renamed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write("".join(f"{line}\n" for line in lines))
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(staged, 0o600)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (the daemon pinning, `wodmail appliance forget`)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
