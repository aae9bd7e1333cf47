"""What an order's workshop is: its folder, its API-DB record (or local wod.yml), its flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wodmail.config import Config
from wodmail.errors import ConfigurationError, WodmailError
from wodmail.portal import PortalClient, PortalWorkshop

WOD_YML = "wod.yml"


@dataclass(frozen=True)
class Workshop:
    """W as ordered, WS its content folder, where that folder is, and its record."""

    name: str
    content: str
    mode: str
    folder: Path
    record: PortalWorkshop
    source: str  # "API-DB", "wod.yml" or "defaults": where the record came from

    @property
    def range_min(self) -> int | None:
        return self.record.range[0] if self.record.range else None


def _local_record(folder: Path, content: str) -> PortalWorkshop | None:
    path = folder / WOD_YML
    if not path.is_file():
        return None
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        return PortalWorkshop.model_validate({"id": 0, "notebook": content, **data})
    except (OSError, ValueError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"{path}: not a usable workshop record: {exc}") from None


def local_workshop(config: Config, name: str, content: str, mode: str) -> Workshop:
    """The workshop as known without asking any peer: its folder and its wod.yml, if any."""
    folder = config.notebooks.folder_of(content)
    if folder is None:
        raise WodmailError(f"unknown workshop {content}: no such folder in the notebooks trees")
    record = _local_record(folder, content)
    if record is not None:
        return Workshop(name, content, mode, folder, record, WOD_YML)
    return Workshop(name, content, mode, folder, PortalWorkshop(id=0, notebook=content),
                    "defaults")


async def resolve_workshop(
    config: Config, name: str, content: str, mode: str, portal: PortalClient | None
) -> Workshop:
    """LIFECYCLE shared steps 2-3: the folder must exist; the record comes from the API-DB
    (by `notebook` == W, then WS), else from the folder's wod.yml."""
    folder = config.notebooks.folder_of(content)
    if folder is None:
        raise WodmailError(f"unknown workshop {content}: no such folder in the notebooks trees")
    if portal is not None:
        found = await portal.find_workshop(name, fallback=content)
        if found is not None:
            record = PortalWorkshop.model_validate(found)
            return Workshop(name, content, mode, folder, record, "API-DB")
    local = _local_record(folder, content)
    if local is not None:
        return Workshop(name, content, mode, folder, local, WOD_YML)
    if portal is not None:
        raise WodmailError(
            f"workshop {name} is not in the API-DB and {folder / WOD_YML} does not exist"
        )
    return Workshop(name, content, mode, folder, PortalWorkshop(id=0, notebook=content),
                    "defaults")
