"""The completion ratio of a student's notebooks: % of code cells executed among the cells
that have an `execution_count`, as the procmail API's CLEANUP computed it.

Notebooks are read from a folder (the workshop folder in the student's home) or from a tar
stream (copied out of the student's container on an appliance). Either way they are the
student's: unreadable, non-JSON or oversized files are skipped, and a tar is only read, never
extracted.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024


def completion_ratio(folder: Path) -> int:
    """The ratio of the notebooks under `folder` (0 when there are none)."""
    if not folder.is_dir():
        return 0
    texts = (_read(path) for path in sorted(folder.rglob("*.ipynb"))
             if ".ipynb_checkpoints" not in path.parts)
    return _ratio(texts)


def tar_completion_ratio(data: bytes) -> int:
    """The ratio of the notebooks in the tar stream `data` (0 when there are none)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            return _ratio(_members(archive))
    except tarfile.TarError:
        return 0


def _members(archive: tarfile.TarFile) -> Iterable[str | None]:
    for member in archive:
        path = PurePosixPath(member.name)
        if not member.isfile() or path.suffix != ".ipynb" or ".ipynb_checkpoints" in path.parts:
            continue
        if member.size > MAX_NOTEBOOK_BYTES:
            continue
        stream = archive.extractfile(member)
        yield None if stream is None else stream.read().decode("utf-8", "replace")


def _read(path: Path) -> str | None:
    try:
        if path.is_symlink() or path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _ratio(texts: Iterable[str | None]) -> int:
    executed = total = 0
    for text in texts:
        for cell in _cells(text):
            if isinstance(cell, dict) and "execution_count" in cell:
                total += 1
                executed += cell["execution_count"] is not None
    return executed * 100 // total if total else 0


def _cells(text: str | None) -> list[object]:
    if text is None:
        return []
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError):
        return []
    return cells if isinstance(cells, list) else []
