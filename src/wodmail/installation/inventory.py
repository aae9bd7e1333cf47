"""Ansible's inventory-level variables of one host, layered as ansible-playbook layers them.

WoD installers write INI inventories (`[production]` then `be.example.org
ansible_connection=local`), with `group_vars/` beside them and beside the playbook. For the
host of the installation's group this gives, in Ansible's order (later winning; the
default VARIABLE_PRECEDENCE): the INI `[all:vars]` and `[group:vars]` values, each
inventory's `group_vars/all`, the playbook's `group_vars/all`, each inventory's
`group_vars/<group>` then the playbook's, the host's inline INI variables, then
`host_vars/<host>` beside the inventories and the playbook. Only INI inventories are read
(what the installer writes); `hash_behaviour` is Ansible's default (replace).
"""

from __future__ import annotations

import ast
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wodmail.errors import ConfigurationError

# Ansible's YAML_FILENAME_EXTENSIONS with the bare name first, as its vars loader tries them.
VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")


@dataclass(frozen=True)
class Layer:
    """Variables from one place (`label`: a file path, `-e KEY=VALUE`, `facts` ...)."""

    label: str
    values: dict[str, Any]


@dataclass
class Inventory:
    """One INI inventory file: hosts (with their inline variables), groups, group variables."""

    path: Path
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    group_vars: dict[str, dict[str, str]] = field(default_factory=dict)

    def first_host(self, group: str) -> str | None:
        hosts = self._hosts_of(group, set())
        return hosts[0] if hosts else None

    def groups_of(self, host: str) -> set[str]:
        """Every group `host` belongs to here, parents (`:children`) included."""
        direct = {group for group, hosts in self.groups.items() if host in hosts}
        found = set(direct)
        changed = True
        while changed:
            changed = False
            for parent, kids in self.children.items():
                if parent not in found and found & set(kids):
                    found.add(parent)
                    changed = True
        return found

    def _hosts_of(self, group: str, seen: set[str]) -> list[str]:
        if group in seen:
            return []
        seen.add(group)
        hosts = list(self.groups.get(group, []))
        for child in self.children.get(group, []):
            hosts.extend(self._hosts_of(child, seen))
        return hosts


def read_inventory(path: Path) -> Inventory:
    """Parses an INI inventory; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the inventory: {exc.strerror}") from None
    inventory = Inventory(path)
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section, _, kind = line[1:-1].partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise ConfigurationError(f"{path}:{number}: unknown section kind {kind!r}")
            continue
        try:
            _add_line(inventory, section, kind, line)
        except ValueError as exc:
            raise ConfigurationError(f"{path}:{number}: {exc}") from None
    return inventory


def _add_line(inventory: Inventory, section: str, kind: str, line: str) -> None:
    if kind == "vars":
        key, equals, value = line.partition("=")
        if not equals:
            raise ValueError(f"expected key=value in [{section}:vars], found {line!r}")
        # In `:vars` sections INI values are strings (Ansible's documented rule).
        inventory.group_vars.setdefault(section, {})[key.strip()] = value.strip()
        return
    if kind == "children":
        inventory.children.setdefault(section, []).append(line.split()[0])
        return
    words = shlex.split(line, comments=True)
    host, pairs = words[0], words[1:]
    host_vars = inventory.hosts.setdefault(host, {})
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"expected key=value after host {host}, found {pair!r}")
        host_vars[key] = _ini_value(value)
    inventory.groups.setdefault(section, [])
    if host not in inventory.groups[section]:
        inventory.groups[section].append(host)


def _ini_value(text: str) -> Any:
    """Inline host variables are Python literals when they parse as one (Ansible's rule)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def vars_files(folder: Path, name: str) -> list[Path]:
    """Ansible's host_group_vars files for entity `name` in `folder` (group_vars/host_vars).

    The first of `name`, `name.yml`, `name.yaml`, `name.json` that exists; a directory
    gives every vars file under it, sorted, hidden and backup files skipped.
    """
    base = folder / name
    for extension in VARS_EXTENSIONS:
        candidate = base.with_name(base.name + extension)
        if candidate.is_dir():
            return _dir_vars_files(candidate)
        if candidate.is_file():
            return [candidate]
    return []


def _dir_vars_files(folder: Path) -> list[Path]:
    found = []
    for entry in sorted(os.scandir(folder), key=lambda item: item.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            found.extend(_dir_vars_files(path))
        elif path.suffix in VARS_EXTENSIONS[1:]:
            found.append(path)
    return found


def _sorted_groups(inventories: list[Inventory], groups: set[str]) -> list[str]:
    """Groups by depth (parents first), then name, as Ansible's sort_groups orders them."""

    def depth(group: str, seen: frozenset[str] = frozenset()) -> int:
        parents = [
            parent
            for inventory in inventories
            for parent, kids in inventory.children.items()
            if group in kids and parent not in seen
        ]
        return 1 + max((depth(parent, seen | {group}) for parent in parents), default=0)

    return sorted(groups, key=lambda group: (depth(group), group))


def host_layers(
    inventories: list[Inventory],
    playbook_dir: Path,
    group: str,
    load: Callable[[Path], dict[str, Any]],
) -> tuple[str, list[Layer]]:
    """The inventory host of `group` and its inventory-level variable layers, in order."""
    host = next(
        (found for inventory in inventories if (found := inventory.first_host(group))), None
    )
    if host is None:
        sources = ", ".join(str(inventory.path) for inventory in inventories)
        raise ConfigurationError(f"no host in group [{group}] of the inventory ({sources})")
    groups: set[str] = set()
    for inventory in inventories:
        groups |= inventory.groups_of(host)
    groups.discard("all")
    ordered = _sorted_groups(inventories, groups)
    folders = [inventory.path.parent for inventory in inventories]
    layers: list[Layer] = []

    def add_files(folder: Path, kind: str, name: str) -> None:
        for path in vars_files(folder / kind, name):
            layers.append(Layer(str(path), load(path)))

    for inventory in inventories:
        if "all" in inventory.group_vars:
            layers.append(Layer(f"{inventory.path} [all:vars]", dict(inventory.group_vars["all"])))
    for name in ordered:
        for inventory in inventories:
            if name in inventory.group_vars:
                label = f"{inventory.path} [{name}:vars]"
                layers.append(Layer(label, dict(inventory.group_vars[name])))
    for folder in folders:
        add_files(folder, "group_vars", "all")
    add_files(playbook_dir, "group_vars", "all")
    for folder in folders:
        for name in ordered:
            add_files(folder, "group_vars", name)
    for name in ordered:
        add_files(playbook_dir, "group_vars", name)
    for inventory in inventories:
        if inventory.hosts.get(host):
            layers.append(Layer(f"{inventory.path} ({host})", dict(inventory.hosts[host])))
    for folder in folders:
        add_files(folder, "host_vars", host)
    add_files(playbook_dir, "host_vars", host)
    return host, layers
