"""`wodmail render`: a workshop as student N would get it, touching no account and no peer.

The tool a workshop author runs before publishing: it lists every template problem (each
undefined variable, each syntax error) at once, and with --out writes exactly the files a
CREATE would put in HOME/WS.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from wodmail.config import Config
from wodmail.errors import WodmailError
from wodmail.host.deploy import TemplateIssue, check_tree, render_tree
from wodmail.lifecycle.backend import Backend
from wodmail.lifecycle.workshop import local_workshop
from wodmail.orders import content_of, is_workshop_name

PLACEHOLDER_PASSWORD = "PASSSTU-placeholder"


def render_workshop(
    config: Config, workshop_name: str, student: int, out: Path | None, password: str | None
) -> tuple[list[TemplateIssue], int, tuple[str, ...]]:
    """Problems found, the number of files written to `out` (0 when there were problems),
    and the warnings about the workshop's record (fields of its wod.yml that were ignored)."""
    if not is_workshop_name(workshop_name):
        raise WodmailError(f"not a workshop name: {workshop_name!r}")
    students = config.students
    if not students.min <= student <= students.max:
        raise WodmailError(f"student {student} outside {students.min}..{students.max}")
    content, mode = content_of(workshop_name)
    workshop = local_workshop(config, workshop_name, content, mode.value)
    backend = Backend.from_config(config)
    renderer = backend.renderer(workshop, student, password or PLACEHOLDER_PASSWORD)
    issues = check_tree(workshop.folder, renderer)
    if issues or out is None:
        return issues, 0, workshop.warnings
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise WodmailError(f"{out} is not empty")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".wodmail-render-") as tmp:
        extras = backend.deploy_extras(workshop, student)  # its templating tasks do not run
        tree = render_tree(workshop.folder, Path(tmp) / content, renderer, extras)
        for item in (Path(tmp) / content).iterdir():
            item.rename(out / item.name)
    return [], len(tree.files), workshop.warnings
