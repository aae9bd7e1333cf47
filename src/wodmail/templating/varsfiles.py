"""Ansible variable files (group_vars, `-e @file`, include_vars), read as ansible-playbook does.

YAML (JSON is YAML) with Ansible's tags: `!unsafe` strings stay literal (never expanded as
templates) and `!vault` values are decrypted; a whole file encrypted with ansible-vault is
decrypted first. Decryption needs the installation's vault secret (see `wodmail.templating.vault`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from wodmail.errors import TemplateError
from wodmail.safefiles import UnsafeFile, as_root, open_file, read_all
from wodmail.templating.vault import Vault, VaultError, is_vaulted


class UnsafeText(str):
    """A string tagged `!unsafe` in YAML: never expanded as a template (as in Ansible)."""

    __slots__ = ()


class _VarsLoader(yaml.SafeLoader):
    """YAML as Ansible reads vars files; `vault` and `where` are set per load."""

    vault: Vault | None = None
    where: str = "<vars>"


def _construct_unsafe(loader: _VarsLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return UnsafeText(loader.construct_scalar(node))
    message = "!unsafe applies to strings only"
    raise yaml.constructor.ConstructorError(None, None, message, node.start_mark)


def _construct_vault(loader: _VarsLoader, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        message = "!vault applies to strings only"
        raise yaml.constructor.ConstructorError(None, None, message, node.start_mark)
    vault = loader.vault if loader.vault is not None else Vault(None)
    detail = f"line {node.start_mark.line + 1}: "
    return vault.decrypt(str(loader.construct_scalar(node)), loader.where, detail)


_VarsLoader.add_constructor("!unsafe", _construct_unsafe)
_VarsLoader.add_constructor("!vault", _construct_vault)


# YAML aliases let a few lines stand for billions of values ("billion laughs"): loading is
# cheap, but printing, copying or serializing such a value is not (str() of it holds the
# GIL). No real variables file or template comes near this many values.
MAX_YAML_VALUES = 1_000_000


class YamlTooLarge(yaml.YAMLError):
    """A YAML document whose aliases repeat values beyond MAX_YAML_VALUES."""


def check_expanded_size(data: Any) -> None:
    """Raise YamlTooLarge when `data`, with every shared value counted each time it is
    used, holds more than MAX_YAML_VALUES values."""
    total = _expanded_size(data, {}, set())
    if total > MAX_YAML_VALUES:
        raise YamlTooLarge(
            f"the document expands to {total} values with its aliases repeated:"
            f" over the limit of {MAX_YAML_VALUES}"
        )


def _expanded_size(value: Any, sizes: dict[int, int], open_ids: set[int]) -> int:
    if not isinstance(value, dict | list):
        return 1
    key = id(value)
    if key in sizes:
        return sizes[key]
    if key in open_ids:  # a recursive structure: counted once
        return 1
    open_ids.add(key)
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    size = 1 + sum(_expanded_size(item, sizes, open_ids) for item in items)
    open_ids.discard(key)
    sizes[key] = size
    return size


def parse_vars(text: str, where: str, vault: Vault | None = None) -> Any:
    """The YAML document `text` (from `where`), vault-decrypted; raises YAMLError if invalid
    (YamlTooLarge if its aliases expand too far)."""
    if is_vaulted(text):
        text = (vault if vault is not None else Vault(None)).decrypt(text, where)
    loader = _VarsLoader(text)
    loader.vault = vault
    loader.where = where
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    check_expanded_size(data)
    return data


def load_vars_file(path: Path, vault: Vault | None = None) -> dict[str, Any]:
    """The variables of a WoD vars file (`variables_<W>.yml`, a group_vars file ...).

    Raises TemplateError naming the file when it cannot be read, is not a YAML mapping, or
    is vaulted and cannot be decrypted (saying why).
    """
    try:
        text = _read(path).decode("utf-8")
    except UnsafeFile as exc:
        raise TemplateError(str(path), exc.problem) from None
    except OSError as exc:
        raise TemplateError(str(path), f"cannot read variables file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TemplateError(str(path), f"variables file is not UTF-8: {exc.reason}") from exc
    try:
        data = parse_vars(text, str(path), vault)
    except yaml.YAMLError as exc:
        raise TemplateError(str(path), f"invalid YAML: {exc}") from None
    except VaultError as exc:
        raise TemplateError(str(path), exc.reason) from None
    return as_variables(data, str(path))


# A vars file is small; anything bigger is no vars file (and must not fill the memory).
MAX_VARS_FILE_BYTES = 16 * 1024 * 1024


def _read(path: Path) -> bytes:
    """The file's bytes. As root, a file in a folder another user may write (the WoD user's
    tree: pass/variables_<W>_<N>.yml a create script writes) is not read through a symbolic
    link: such a link could make root read any file and hand its values to a notebook."""
    if not as_root():
        return path.read_bytes()
    folder = os.stat(path.parent)
    follow = folder.st_uid == 0 and not folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    fd = open_file(path, follow=follow)
    try:
        return read_all(fd, MAX_VARS_FILE_BYTES, path)
    finally:
        os.close(fd)


def as_variables(data: Any, where: str) -> dict[str, Any]:
    """`data` as a mapping of variable names, or a TemplateError naming `where`."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        found = type(data).__name__
        raise TemplateError(where, f"expected a mapping of variables, found a {found}")
    not_names = [key for key in data if not isinstance(key, str)]
    if not_names:
        raise TemplateError(where, f"variable names must be strings, found {not_names[0]!r}")
    return data


__all__ = [
    "MAX_YAML_VALUES",
    "UnsafeText",
    "YamlTooLarge",
    "as_variables",
    "check_expanded_size",
    "load_vars_file",
    "parse_vars",
]
