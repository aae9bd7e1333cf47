"""Deploying a workshop's notebooks into a student's home, atomically.

What the old backend's copy_folder.yml did.

The workshop folder is rendered aside, in a
staging folder inside HOME (same file system), and moved into place with one rename only
once every file rendered: a bad template leaves HOME exactly as it was. Then the
JupyterLab workspace file that opens `WS/0-ReadMeFirst.ipynb` is written.

Which files are templates follows the old playbook (Ansible `find` + `rsync`):
`*.ipynb *.yaml *.py *.sh *.src *.tf *.env Variables.ps1`, by base name, not hidden
(`.x.py`), not under `.ipynb_checkpoints/`. Stale notebook checkpoints
(`*-checkpoint.ipynb`) and hidden `*.ipynb`/`*.py` leftovers (`.~1-Lab.ipynb`) are not
delivered, as the old playbook never delivered them. Everything else is copied as is
(times kept, symlinks as symlinks). Modes are kept without their "other" bits: nothing
delivered into a home is readable by other students.

Ownership and ACLs are not set here: DeployResult.student_paths lists what to give to
the student.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePath
from typing import Literal

import jinja2
import structlog

from wodmail.errors import AccountError, TemplateError
from wodmail.templating.renderer import Renderer, looks_like_template

__all__ = [
    "DeployExtras",
    "DeployResult",
    "TemplateIssue",
    "TreeResult",
    "check_file",
    "check_tree",
    "deploy_workshop",
    "delivery",
    "render_tree",
    "workspace_json",
]

log = structlog.get_logger(__name__)

TEMPLATED_SUFFIXES = (".ipynb", ".yaml", ".py", ".sh", ".src", ".tf", ".env")
TEMPLATED_NAMES = frozenset({"Variables.ps1"})
# Kinds the old playbook only ever delivered through the template module.
_TEMPLATE_ONLY_SUFFIXES = (".ipynb", ".py")
CHECKPOINTS_DIR = ".ipynb_checkpoints"
README_NOTEBOOK = "0-ReadMeFirst.ipynb"
README_CHECKPOINT = "0-ReadMeFirst-checkpoint.ipynb"
WORKSPACES_DIR = PurePath(".jupyter", "lab", "workspaces")
# JupyterLab's file name for the workspace with id "default" (slug + sha256("default")[:4]).
WORKSPACE_FILE = "default-37a8.jupyterlab-workspace"
_WORKSPACE_TEMPLATE = "jupyterlab-workspace.json.j2"
_STAGING_PREFIX = ".wodmail-deploy-"
# Everything delivered into a home is closed to other users (students must not read each
# other's work: a varpass notebook holds the student's password): the workshop's modes and
# the old playbook's (0751 folders, 0644 files) lose their "other" bits.
_MADE_DIR_MODE = 0o750
_MADE_FILE_MODE = 0o640
_PDF_SCRIPT_MODE = 0o750
PDF_SCRIPT = "wod-generate-pdf.sh"

Delivery = Literal["render", "copy", "skip"]


@dataclass(frozen=True)
class TreeResult:
    """What render_tree wrote: every file (and symlink) and, among them, the rendered ones."""

    files: tuple[Path, ...]
    rendered: tuple[Path, ...]
    bytes: int


@dataclass(frozen=True)
class TemplateIssue:
    """One problem found by check_tree: the file (e.g. 'WKSHP-X/1-Intro.ipynb') and what."""

    file: str
    problem: str
    undefined: bool = False
    """An undefined variable (which a create hook may still provide), not a syntax error."""
    variable: str | None = None
    """The undefined variable's name, when the problem is one."""


@dataclass(frozen=True)
class DeployExtras:
    """What the installation adds to a deploy when it has it, as its copy_folder.yml did."""

    workspace_template: Path | None = None
    """`<WODSYSDIR>/lab-*.jupyterlab-workspace.j2`, rendered with the order's variables."""
    pdf_script: Path | None = None
    """`<WODSYSDIR>/wod-generate-pdf.sh`, delivered into HOME/WS (mode 0755)."""
    tasks: Callable[[str], None] | None = None
    """Runs the private `pre_templating` / `post_templating` tasks (given that name). When
    set, the deploy happens in place, as the tasks expect: HOME/WS gets the copied files,
    then the pre tasks run, then the templates are rendered, then the post tasks run."""


@dataclass(frozen=True)
class DeployResult:
    """A finished deploy. Each of `student_paths`, and what is below it, belongs to the student."""

    workshop_dir: Path
    workspace_file: Path
    student_paths: tuple[Path, ...]
    files: int
    rendered: int
    bytes: int


def delivery(relative: PurePath) -> Delivery:
    """How a file of a workshop folder (path relative to the folder) reaches the student."""
    name = relative.name
    hidden = name.startswith(".")
    if name.endswith("-checkpoint.ipynb") or (hidden and name.endswith(_TEMPLATE_ONLY_SUFFIXES)):
        return "skip"
    if hidden or CHECKPOINTS_DIR in relative.parts[:-1]:
        return "copy"
    if name in TEMPLATED_NAMES or name.endswith(TEMPLATED_SUFFIXES):
        return "render"
    return "copy"


def render_tree(
    source: Path, dest: Path, renderer: Renderer, extras: DeployExtras | None = None
) -> TreeResult:
    """Write into `dest` exactly what a CREATE puts in HOME/WS for the workshop folder `source`.

    Templates are rendered, the rest copied, then `.ipynb_checkpoints/` is made with a copy
    of the rendered 0-ReadMeFirst.ipynb. Raises TemplateError at the first file that fails;
    `dest` is then left partly written (deploy_workshop renders into a staging folder).
    """
    if not source.is_dir():
        raise TemplateError(str(source), "no such workshop folder")
    writer = _TreeWriter(source, renderer)
    dest.mkdir(parents=True, exist_ok=True)
    writer.copy_dir(source, dest, PurePath())
    return _finish_tree(writer, source, dest, extras)


def _finish_tree(
    writer: _TreeWriter, source: Path, dest: Path, extras: DeployExtras | None
) -> TreeResult:
    writer.add_readme_checkpoint(dest)
    if extras is not None and extras.pdf_script is not None:
        writer.add_file(extras.pdf_script, dest / PDF_SCRIPT, _PDF_SCRIPT_MODE)
    dest.chmod(_private(source.stat().st_mode))
    return TreeResult(tuple(writer.files), tuple(writer.rendered), writer.bytes)


def check_tree(source: Path, renderer: Renderer) -> list[TemplateIssue]:
    """Every problem of the workshop's templates (each undefined variable, each syntax error)."""
    if not source.is_dir():
        raise TemplateError(str(source), "no such workshop folder")
    issues: list[TemplateIssue] = []
    for path in _template_files(source):
        relative = path.relative_to(source)
        data = path.read_bytes()
        if not looks_like_template(data):
            continue
        name = _display_name(source, relative)
        try:
            undefined = renderer.undefined_variables(_decode(data, name), name)
        except TemplateError as exc:
            issues.append(TemplateIssue(name, str(exc).removeprefix(f"{exc.file}: ")))
            continue
        issues.extend(TemplateIssue(name, _undefined_problem(item), undefined=True,
                                    variable=None if " " in item else item)
                      for item in sorted(undefined))
    return issues


def check_file(path: Path, renderer: Renderer) -> list[TemplateIssue]:
    """The problems of one template file outside the workshop (the workspace template)."""
    try:
        undefined = renderer.undefined_variables(_decode(path.read_bytes(), str(path)), str(path))
    except OSError as exc:
        return [TemplateIssue(str(path), f"cannot read: {exc.strerror}")]
    except TemplateError as exc:
        return [TemplateIssue(str(path), str(exc).removeprefix(f"{exc.file}: "))]
    return [TemplateIssue(str(path), _undefined_problem(item), undefined=True)
            for item in sorted(undefined)]


def deploy_workshop(
    source: Path, home: Path, renderer: Renderer, extras: DeployExtras | None = None
) -> DeployResult:
    """Deploy the workshop folder `source` (named WS) into `home`, replacing HOME/WS.

    On any failure HOME is left as it was: no half-rendered folder, no staging folder
    (except on the in-place path of installations with private templating tasks).
    """
    if not home.is_dir():
        raise AccountError(f"no home directory {home}")
    if extras is not None and extras.tasks is not None:
        return _deploy_in_place(source, home, renderer, extras)
    workshop = source.name
    target = home / workshop
    _remove_stale_staging(home)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=home))
    try:
        tree = render_tree(source, staging / workshop, renderer, extras)
        staged_workspace = staging / WORKSPACE_FILE
        workspace = _workspace_text(workshop, renderer, extras)
        _write_new_file(staged_workspace, workspace.encode(), _MADE_FILE_MODE)
        made_jupyter_dir = _make_workspaces_dir(home)
        if target.exists() or target.is_symlink():
            os.rename(target, staging / "previous")  # removed with the staging folder
        os.rename(staging / workshop, target)
        workspace_file = home / WORKSPACES_DIR / WORKSPACE_FILE
        os.replace(staged_workspace, workspace_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _deployed(home, target, tree, made_jupyter_dir, workspace_file)


def _deploy_in_place(
    source: Path, home: Path, renderer: Renderer, extras: DeployExtras
) -> DeployResult:
    """The old playbook's order, for the private pre/post templating tasks: copy, pre tasks,
    render, post tasks, all in HOME/WS (a failure can leave it half-deployed)."""
    assert extras.tasks is not None
    workshop = source.name
    target = home / workshop
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    target.mkdir()
    writer = _TreeWriter(source, renderer, only="copy")
    writer.copy_dir(source, target, PurePath())
    extras.tasks("pre_templating")
    writer.only = "render"
    writer.copy_dir(source, target, PurePath())
    extras.tasks("post_templating")
    tree = _finish_tree(writer, source, target, extras)
    made_jupyter_dir = _make_workspaces_dir(home)
    workspace_file = home / WORKSPACES_DIR / WORKSPACE_FILE
    workspace_file.unlink(missing_ok=True)
    workspace = _workspace_text(workshop, renderer, extras)
    _write_new_file(workspace_file, workspace.encode(), _MADE_FILE_MODE)
    return _deployed(home, target, tree, made_jupyter_dir, workspace_file)


def _deployed(
    home: Path, target: Path, tree: TreeResult, made_jupyter_dir: Path | None,
    workspace_file: Path,
) -> DeployResult:
    workshop = target.name
    owned = (target, *((made_jupyter_dir,) if made_jupyter_dir else ()), workspace_file)
    log.info(
        "workshop deployed",
        workshop=workshop,
        home=str(home),
        files=len(tree.files),
        rendered=len(tree.rendered),
        bytes=tree.bytes,
    )
    return DeployResult(
        workshop_dir=target,
        workspace_file=workspace_file,
        student_paths=owned,
        files=len(tree.files),
        rendered=len(tree.rendered),
        bytes=tree.bytes,
    )


@functools.cache
def _workspace_template() -> jinja2.Template:
    template_text = (
        resources.files("wodmail").joinpath("templates", _WORKSPACE_TEMPLATE).read_text("utf-8")
    )
    environment = jinja2.Environment(autoescape=False, keep_trailing_newline=True)
    return environment.from_string(template_text)


def _workspace_text(workshop: str, renderer: Renderer, extras: DeployExtras | None) -> str:
    """The installation's workspace template rendered for the order, else wodmail's own."""
    template = extras.workspace_template if extras is not None else None
    if template is None:
        return workspace_json(workshop)
    try:
        text = template.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(str(template), f"cannot read: {exc.strerror}") from exc
    return renderer.render(text, str(template))


def workspace_json(workshop: str) -> str:
    """The JupyterLab workspace that opens `<workshop>/0-ReadMeFirst.ipynb` (paths from HOME)."""
    return _workspace_template().render(notebook=f"{workshop}/{README_NOTEBOOK}", folder=workshop)


class _TreeWriter:
    """Copies and renders one workshop folder, counting what it writes."""

    def __init__(
        self, source: Path, renderer: Renderer, only: Literal["copy", "render"] | None = None
    ) -> None:
        self._source = source
        self._renderer = renderer
        self.only = only
        """Deliver only copied files (and make folders), or only rendered ones; None: all."""
        self.files: list[Path] = []
        self.rendered: list[Path] = []
        self.bytes = 0

    def copy_dir(self, source_dir: Path, dest_dir: Path, relative: PurePath) -> None:
        with os.scandir(source_dir) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            entry_relative = relative / entry.name
            dest = dest_dir / entry.name
            if entry.is_dir(follow_symlinks=False):
                dest.mkdir(exist_ok=True)
                self.copy_dir(Path(entry.path), dest, entry_relative)
                shutil.copystat(entry.path, dest, follow_symlinks=False)
                dest.chmod(_private(entry.stat(follow_symlinks=False).st_mode))
            elif entry.is_symlink():
                if self.only != "render":
                    self._copy_symlink(Path(entry.path), dest, entry_relative)
            elif entry.is_file(follow_symlinks=False):
                self._deliver_file(Path(entry.path), dest, entry_relative)
            else:
                log.warning("special file not deployed", file=self._name(entry_relative))

    def add_readme_checkpoint(self, dest: Path) -> None:
        checkpoints = dest / CHECKPOINTS_DIR
        if not checkpoints.is_dir():
            checkpoints.mkdir()
            checkpoints.chmod(_MADE_DIR_MODE)
        readme = dest / README_NOTEBOOK
        if readme.is_file():
            checkpoint = checkpoints / README_CHECKPOINT
            shutil.copyfile(readme, checkpoint)
            checkpoint.chmod(_MADE_FILE_MODE)
            self._count(checkpoint, checkpoint.stat().st_size)

    def _deliver_file(self, source: Path, dest: Path, relative: PurePath) -> None:
        how = delivery(relative)
        wrong_phase = self.only is not None and (how == "render") != (self.only == "render")
        if how == "skip" or wrong_phase:
            return
        name = self._name(relative)
        try:
            if how == "copy":
                shutil.copy2(source, dest, follow_symlinks=False)
                dest.chmod(_private(dest.stat().st_mode))
                self._count(dest, dest.stat().st_size)
                return
            data = source.read_bytes()
            if looks_like_template(data):
                text = self._renderer.render(_decode(data, name), name)
                data = text.encode("utf-8", "surrogateescape")
                self.rendered.append(dest)
            _write_new_file(dest, data, stat.S_IMODE(source.stat().st_mode))
            self._count(dest, len(data))
        except OSError as exc:
            raise TemplateError(name, f"cannot deploy: {exc.strerror or exc}") from exc

    def add_file(self, source: Path, dest: Path, mode: int) -> None:
        try:
            data = source.read_bytes()
            dest.unlink(missing_ok=True)
            _write_new_file(dest, data, mode)
        except OSError as exc:
            raise TemplateError(str(source), f"cannot deliver: {exc.strerror}") from exc
        self._count(dest, len(data))

    def _copy_symlink(self, source: Path, dest: Path, relative: PurePath) -> None:
        try:
            os.symlink(os.readlink(source), dest)
        except OSError as exc:
            raise TemplateError(self._name(relative), f"cannot deploy: {exc.strerror}") from exc
        self._count(dest, 0)

    def _count(self, path: Path, size: int) -> None:
        self.files.append(path)
        self.bytes += size

    def _name(self, relative: PurePath) -> str:
        return _display_name(self._source, relative)


def _template_files(source: Path) -> list[Path]:
    """The files of `source` that are rendered, in a stable order."""
    found = []
    for folder, dirs, files in os.walk(source):  # symlinked folders are not followed
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            if not path.is_symlink() and delivery(path.relative_to(source)) == "render":
                found.append(path)
    return found


def _display_name(source: Path, relative: PurePath) -> str:
    return f"{source.name}/{relative.as_posix()}"


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Ansible carries on with the invalid bytes escaped (and warns): so do we.
        log.warning("template is not valid UTF-8; invalid bytes kept as they are", file=name)
        return data.decode("utf-8", "surrogateescape")


def _undefined_problem(item: str) -> str:
    # undefined_variables gives names, or a description for a missing key of a dict.
    return item if " " in item else f"undefined variable {item!r}"


def _private(mode: int) -> int:
    """`mode`'s permission bits without those of other users."""
    return stat.S_IMODE(mode) & ~0o007


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb", closefd=False) as stream:
            stream.write(data)
        os.fchmod(descriptor, _private(mode))
    finally:
        os.close(descriptor)


def _make_workspaces_dir(home: Path) -> Path | None:
    """Create HOME/.jupyter/lab/workspaces as needed; the top-most folder made, if any."""
    first_made: Path | None = None
    current = home
    for part in WORKSPACES_DIR.parts:
        current = current / part
        if current.is_dir():
            continue
        try:
            current.mkdir()
            current.chmod(_MADE_DIR_MODE)
        except OSError as exc:
            raise AccountError(f"cannot create {current}: {exc.strerror}") from exc
        first_made = first_made or current
    return first_made


def _remove_stale_staging(home: Path) -> None:
    """Staging folders a crashed deploy left behind (ours by name)."""
    for leftover in home.glob(f"{_STAGING_PREFIX}*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
