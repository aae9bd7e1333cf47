"""Ansible Vault data (format 1.1/1.2), decrypted with ansible-core's own implementation.

WoD's create scripts store per-student values (HTTPPORT, tokens, PASSSTU) with
`ansible-vault encrypt_string --vault-password-file <private ansible dir>/vault_secret`, and
`copy_folder.yml` reads them back with the same secret file. We decrypt exactly as
ansible-playbook does by calling ansible-core (the optional `[ansible]` extra): no crypto of
our own. Without it wodmail still runs; only a vaulted file says, when met, what is missing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from wodmail.errors import ConfigurationError

VAULT_HEADER = "$ANSIBLE_VAULT;"
EXTRA_HINT = "install wodmail with its [ansible] extra (pip install 'wodmail[ansible]')"


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

    `secret_file` is what the old backend passed as `--vault-password-file`. The secret and
    what it decrypts are never logged.
    """

    def __init__(self, secret_file: Path | None) -> None:
        self.secret_file = secret_file
        self._lib: Any = None
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
            from ansible.parsing.dataloader import DataLoader
            from ansible.parsing.vault import VaultLib, get_file_vault_secret
        except ImportError:
            reason = f"{said}; reading it needs ansible-core: {EXTRA_HINT}"
            raise VaultError(where, reason) from None
        if not self.secret_file.is_file():
            raise VaultError(where, f"{said} but the vault secret {self.secret_file} is missing")
        try:
            # Ansible's own reading: stripped file content, or a script's output if executable.
            secret = get_file_vault_secret(
                filename=str(self.secret_file), vault_id="default", loader=DataLoader()
            )
            secret.load()
        except Exception as exc:
            reason = f"{said}; cannot read the vault secret {self.secret_file}"
            raise VaultError(where, f"{reason}: {_first_line(exc)}") from None
        return VaultLib([("default", secret)])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
