"""Ansible Vault data (format 1.1/1.2), decrypted with ansible-core's own implementation.

WoD's create scripts store per-student values (HTTPPORT, tokens, PASSSTU) with
`ansible-vault encrypt_string --vault-password-file <private ansible dir>/vault_secret`, and
`copy_folder.yml` reads them back with the same secret file. We decrypt exactly as
ansible-playbook does by calling ansible-core (the optional `[ansible]` extra): no crypto of
our own. Without it wodmail still runs; only a vaulted file says, when met, what is missing.

The secret file is read as Ansible reads it (its content, stripped; an executable one is
run and its output taken), but by wodmail itself, through one descriptor, so that root
never follows a path the WoD user controls (`wodmail.safefiles`). When wodmail is root:
the file is not followed through a symbolic link and must not be writable by group or
others; a plain file must belong to root or to the installation's user (`owners`), and an
executable one to root, as root runs it: a vault password script of anyone else's is
refused, not run.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

from wodmail.errors import ConfigurationError
from wodmail.safefiles import UnsafeFile, as_root, check_owner, open_file, owned, read_all

VAULT_HEADER = "$ANSIBLE_VAULT;"
EXTRA_HINT = "install wodmail with its [ansible] extra (pip install 'wodmail[ansible]')"
SECRET_CAP = 64 * 1024
SCRIPT_TIMEOUT_SECONDS = 30.0


class VaultError(ConfigurationError):
    """Vaulted data that cannot be decrypted; `where` is the file, `reason` says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def is_vaulted(text: str | bytes) -> bool:
    """Whether `text` is Ansible Vault ciphertext (a whole file or one `!vault` value)."""
    head = text.lstrip()[: len(VAULT_HEADER)]
    return (head.decode("ascii", "replace") if isinstance(head, bytes) else head) == VAULT_HEADER


class Vault:
    """The installation's vault secret; read from its file when first needed, then kept.

    `secret_file` is what the old backend passed as `--vault-password-file`; `owners` are
    the uids a plain secret file may belong to when wodmail is root (root always may). The
    secret and what it decrypts are never logged.
    """

    def __init__(self, secret_file: Path | None, owners: Collection[int] = ()) -> None:
        self.secret_file = secret_file
        self.owners = frozenset({0, *owners})
        self._lib: Any = None
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def decrypt(self, ciphertext: str, where: str, detail: str = "") -> str:
        """The plaintext of `ciphertext` found in file `where` (`detail`: e.g. 'line 3: ')."""
        lib = self._vault_lib(where, detail)
        try:
            plain = lib.decrypt(ciphertext.strip().encode("ascii"))
        except UnicodeEncodeError:
            raise VaultError(where, f"{detail}not valid Ansible Vault data") from None
        except Exception as exc:  # ansible-core's AnsibleError family and ValueErrors
            raise VaultError(
                where,
                f"{detail}cannot decrypt with the vault secret {self.secret_file}: "
                f"{_first_line(exc)}",
            ) from None
        return bytes(plain).decode("utf-8")

    def secret(self) -> bytes:
        """The vault password (read once, then kept); ConfigurationError saying why not."""
        with self._lock:
            return self._kept_secret()

    def refusal(self) -> str | None:
        """Why the secret file would be refused (`check-config`), without running it;
        None when it is acceptable or missing."""
        if self.secret_file is None:
            return None
        try:
            fd = open_file(self.secret_file, follow=not as_root())
        except UnsafeFile as exc:
            return str(exc)
        except OSError:
            return None
        try:
            self._check(self.secret_file, os.fstat(fd))
        except UnsafeFile as exc:
            return str(exc)
        finally:
            os.close(fd)
        return None

    def _vault_lib(self, where: str, detail: str) -> Any:
        with self._lock:
            if self._lib is None:
                self._lib = self._load(where, detail)
            return self._lib

    def _load(self, where: str, detail: str) -> Any:
        said = f"{detail}encrypted with Ansible Vault"
        if self.secret_file is None:
            raise VaultError(
                where,
                f"{said} but no vault secret is known (configure `installation`: wodmail "
                "then uses the installation's <private ansible dir>/vault_secret)",
            )
        try:
            from ansible.parsing.vault import VaultLib, VaultSecret
        except ImportError:
            reason = f"{said}; reading it needs ansible-core: {EXTRA_HINT}"
            raise VaultError(where, reason) from None
        if not os.path.lexists(self.secret_file):
            raise VaultError(where, f"{said} but the vault secret {self.secret_file} is missing")
        try:
            secret = self._kept_secret()
        except ConfigurationError as exc:
            raise VaultError(where, f"{said}; cannot use the vault secret: {exc}") from None
        return VaultLib([("default", VaultSecret(secret))])

    def _kept_secret(self) -> bytes:
        """The secret, read on first use (call with the lock held)."""
        if self._secret is None:
            self._secret = self._read_secret()
        return self._secret

    def _read_secret(self) -> bytes:
        path = self.secret_file
        if path is None:
            raise ConfigurationError("no vault secret is known")
        try:
            fd = open_file(path, follow=not as_root())
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot be read: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            self._check(path, info)
            if info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
                secret = _run_script(fd, path)  # Ansible runs an executable secret file
            else:
                secret = read_all(fd, SECRET_CAP, path).strip()
        finally:
            os.close(fd)
        secret = secret.strip(b"\r\n")
        if not secret:
            raise ConfigurationError(f"{path}: the vault secret is empty")
        return secret

    def _check(self, path: Path, info: os.stat_result) -> None:
        """UnsafeFile when root may not use this secret file (see the module's doc)."""
        if not as_root():
            return
        if info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            if info.st_uid != 0:
                raise UnsafeFile(path, f"is an executable {owned(info)}: refused, wodmail runs "
                                 "as root and runs no one else's vault password script (make "
                                 "it root's, or a plain file)")
            check_owner(path, info, owners={0}, use="run as root")
        else:
            check_owner(path, info, owners=self.owners, use="read as root")


def _run_script(fd: int, path: Path) -> bytes:
    """A vault password script's output; the script is started through its descriptor."""
    try:
        run = subprocess.run([f"/dev/fd/{fd}"], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=SCRIPT_TIMEOUT_SECONDS, check=False,
                             cwd="/")
    except subprocess.TimeoutExpired:
        raise ConfigurationError(f"{path}: the vault password script took over "
                                 f"{SCRIPT_TIMEOUT_SECONDS:.0f} s") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: the vault password script could not start: "
                                 f"{exc.strerror}") from None
    if run.returncode != 0:
        raise ConfigurationError(f"{path}: the vault password script exited with status "
                                 f"{run.returncode}")
    return run.stdout


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
