"""`wodmail render`: a workshop as student N would get it, touching no account and no peer.

The tool a workshop author runs before publishing: it lists every template problem (each
undefined variable, each syntax error) at once, and with --out writes exactly the files a
CREATE would put in HOME/WS.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from wodmail.config import Config
from wodmail.errors import WodmailError
from wodmail.host.deploy import TemplateIssue, check_tree, render_tree
from wodmail.lifecycle.backend import Backend
from wodmail.lifecycle.workshop import local_workshop
from wodmail.orders import content_of, is_workshop_name

PLACEHOLDER_PASSWORD = "PASSSTU-placeholder"


@dataclass
class Preview:
    issues: list[TemplateIssue]
    """Problems: syntax errors and variables nothing defines."""
    written: int
    """Files written to `out` (0 when there were problems)."""
    warnings: tuple[str, ...]
    """About the workshop's record (fields of its wod.yml that were ignored)."""
    at_create: list[tuple[TemplateIssue, str]] = field(default_factory=list)
    """Variables the workshop's CREATE hooks set (not problems), with the hook setting each."""


def render_workshop(
    config: Config, workshop_name: str, student: int, out: Path | None, password: str | None
) -> Preview:
    """The workshop rendered for `student` (into `out`, when given and nothing is wrong).
    A variable that a create hook sets is no problem: with `out`, it gets a placeholder."""
    if not is_workshop_name(workshop_name):
        raise WodmailError(f"not a workshop name: {workshop_name!r}")
    students = config.students
    if not students.min <= student <= students.max:
        raise WodmailError(f"student {student} outside {students.min}..{students.max}")
    content, mode = content_of(workshop_name)
    workshop = local_workshop(config, workshop_name, content, mode.value)
    backend = Backend.from_config(config)
    provided = backend.hooks.provided(content)
    placeholders = {name: f"<{name}: set at CREATE by {hook}>" for name, hook in provided.items()}
    password = password or PLACEHOLDER_PASSWORD
    found = check_tree(workshop.folder, backend.renderer(workshop, student, password))
    issues = [issue for issue in found if issue.variable not in provided]
    at_create = [(issue, provided[issue.variable]) for issue in found
                 if issue.variable in provided]
    if issues or out is None:
        return Preview(issues, 0, workshop.warnings, at_create)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise WodmailError(f"{out} is not empty")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".wodmail-render-") as tmp:
        extras = backend.deploy_extras(workshop, student)  # its templating tasks do not run
        renderer = backend.renderer(workshop, student, password, defaults=placeholders)
        tree = render_tree(workshop.folder, Path(tmp) / content, renderer, extras)
        for item in (Path(tmp) / content).iterdir():
            item.rename(out / item.name)
    return Preview([], len(tree.files), workshop.warnings, at_create)
