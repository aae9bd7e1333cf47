"""What an order's workshop is: its folder, its API-DB record (or local wod.yml), its flags.

Records are read the way the procmail API read them, tolerantly: a field an order does not
need (a description, a replay link, a malformed `capacity`) never fails it. A field that
cannot be read is dropped with a one-line warning naming the file (or record) and field;
only the fields orders need (`NEEDED`) fail a record, with a one-line reason. An unusable
`range` fails only an order that needs the range (`Workshop.range_min`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wodmail.config import Config
from wodmail.errors import ConfigurationError, WodmailError
from wodmail.peers.portal import PortalClient, PortalWorkshop

WOD_YML = "wod.yml"
NEEDED = frozenset(
    {"id", "notebook", "reset", "varpass", "ldap", "monoappliance", "multiappliance", "compile"}
)
"""The record fields that steer an order; any other field is informative only."""


@dataclass(frozen=True)
class Workshop:
    """W as ordered, WS its content folder, where that folder is, and its record."""

    name: str
    content: str
    mode: str
    folder: Path
    record: PortalWorkshop
    source: str  # "API-DB", "wod.yml" or "defaults": where the record came from
    warnings: tuple[str, ...] = ()

    @property
    def range_min(self) -> int | None:
        """The first student of the workshop's range; ConfigurationError when it is unusable."""
        if self.record.range_error:
            raise ConfigurationError(
                f"workshop {self.content} ({self.source}): {self.record.range_error}, "
                f"and this order needs its range"
            )
        return self.record.range[0] if self.record.range else None


def parse_record(data: dict[str, Any], origin: str) -> tuple[PortalWorkshop, list[str]]:
    """The record in `data`, with a warning for each informative field that had to be dropped.

    ConfigurationError (one line, naming `origin` and the field) when a NEEDED field is wrong.
    """
    data = dict(data)
    warnings: list[str] = []
    for _ in range(len(data) + 1):
        try:
            return PortalWorkshop.model_validate(data), warnings
        except ValidationError as exc:
            fields = {str(error["loc"][0]) if error["loc"] else "?": error["msg"]
                      for error in exc.errors()}
        for field, message in fields.items():
            if field in NEEDED or field not in data:
                raise ConfigurationError(f"{origin}: field {field}: {_one_line(message)}")
            warnings.append(f"{origin}: field {field} ignored: {_one_line(message)}")
            del data[field]
    raise ConfigurationError(f"{origin}: not a usable workshop record")  # pragma: no cover


def read_wod_yml(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The top-level fields of a wod.yml; when the file is not valid YAML as a whole, each
    field that parses on its own, with a warning per field that does not (NEEDED ones fail).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot be read: {_one_line(str(exc))}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return _fields_one_by_one(path, text)
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: not a mapping of fields (found {type(data).__name__})")
    return data, []


def _fields_one_by_one(path: Path, text: str) -> tuple[dict[str, Any], list[str]]:
    data: dict[str, Any] = {}
    warnings: list[str] = []
    for key, line, entry in _top_level_entries(text):
        try:
            value = yaml.safe_load(entry)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            reason = f"{path}: field {key} (line {line}) cannot be parsed: {_one_line(problem)}"
            if key in NEEDED:
                raise ConfigurationError(reason) from None
            warnings.append(f"{reason}; ignored")
            continue
        if isinstance(value, dict):
            data.update(value)
    return data, warnings


def _top_level_entries(text: str) -> list[tuple[str, int, str]]:
    """(key, first line number, text) of each `key: ...` at column 0 with its continuation."""
    entries: list[tuple[str, int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(("%", "---", "...", "#")) or not line.strip():
            continue
        key, colon, _ = line.partition(":")
        if colon and not line[0].isspace() and key.strip() and " " not in key.strip():
            entries.append((key.strip(), number, [line]))
        elif entries:
            entries[-1][2].append(line)
    return [(key, number, "\n".join(lines)) for key, number, lines in entries]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _local_record(folder: Path, content: str) -> tuple[PortalWorkshop, list[str]] | None:
    path = folder / WOD_YML
    if not path.is_file():
        return None
    data, warnings = read_wod_yml(path)
    record, dropped = parse_record({**data, "id": 0, "notebook": content}, str(path))
    return record, warnings + dropped


def _defaults(name: str, content: str, mode: str, folder: Path) -> Workshop:
    return Workshop(name, content, mode, folder, PortalWorkshop(id=0, notebook=content),
                    "defaults")


def _folder(config: Config, content: str) -> Path:
    folder = config.notebooks.folder_of(content)
    if folder is None:
        raise WodmailError(f"unknown workshop {content}: no such folder in the notebooks trees")
    return folder


def local_workshop(config: Config, name: str, content: str, mode: str) -> Workshop:
    """The workshop as known without asking any peer: its folder and its wod.yml, if any."""
    folder = _folder(config, content)
    local = _local_record(folder, content)
    if local is None:
        return _defaults(name, content, mode, folder)
    return Workshop(name, content, mode, folder, local[0], WOD_YML, tuple(local[1]))


async def resolve_workshop(
    config: Config, name: str, content: str, mode: str, portal: PortalClient | None
) -> Workshop:
    """LIFECYCLE shared steps 2-3: the folder must exist; the record comes from the API-DB
    (by `notebook` == W, then WS), else from the folder's wod.yml."""
    folder = _folder(config, content)
    if portal is not None:
        found = await portal.find_workshop(name, fallback=content)
        if found is not None:
            origin = f"API-DB workshop {found.get('id', '?')} ({name})"
            record, warnings = parse_record(found, origin)
            return Workshop(name, content, mode, folder, record, "API-DB", tuple(warnings))
    local = _local_record(folder, content)
    if local is not None:
        return Workshop(name, content, mode, folder, local[0], WOD_YML, tuple(local[1]))
    if portal is not None:
        raise WodmailError(
            f"workshop {name} is not in the API-DB and {folder / WOD_YML} does not exist"
        )
    return _defaults(name, content, mode, folder)
