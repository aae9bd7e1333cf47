"""Loading workshop handler modules: the public package and a private folder.

A module declares `WORKSHOPS` and defines async hooks named after the phases; what it
may import from wodmail is `wodmail.hooks.__all__` and `wodmail.errors.__all__`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from wodmail.errors import ConfigurationError, HookFailed
from wodmail.hooks._process import cap_text
from wodmail.hooks.context import PHASES, HookFunction

PUBLIC_HANDLERS = "wodmail.workshops"
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Handler:
    origin: str
    """The module's dotted name (public package) or file path (folder), for messages."""
    file: str
    module: ModuleType
    workshops: tuple[str, ...]
    provides: tuple[str, ...] = ()
    """The per-student template variables its hooks set (its `PROVIDES`)."""
    images: tuple[str, ...] = ()
    """The images its appliance must hold (its `IMAGES`), for `check-config`."""

    def function(self, phase: str) -> HookFunction | None:
        return getattr(self.module, phase, None)


def load_handlers(source: str | Path | None) -> dict[str, Handler]:
    if source is None:
        return {}
    modules = _folder_modules(source) if isinstance(source, Path) else _package_modules(source)
    handlers: dict[str, Handler] = {}
    for handler in modules:
        for workshop in handler.workshops:
            other = handlers.get(workshop)
            if other is not None:
                raise ConfigurationError(
                    f"{workshop} is claimed by two handler modules: {other.file} and "
                    f"{handler.file}; keep one"
                )
            handlers[workshop] = handler
    return handlers


def _package_modules(package: str) -> Iterator[Handler]:
    try:
        parent = importlib.import_module(package)
    except Exception as exc:
        raise ConfigurationError(
            f"handler package {package} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    infos = sorted(pkgutil.iter_modules(parent.__path__), key=lambda info: info.name)
    for info in infos:
        if info.name.startswith("_"):
            continue
        dotted = f"{package}.{info.name}"
        spec = importlib.util.find_spec(dotted)
        file = spec.origin if spec and spec.origin else dotted
        module = _imported(file, lambda dotted=dotted: importlib.import_module(dotted))
        yield _handler(module, origin=dotted, file=file)


def _folder_modules(folder: Path) -> Iterator[Handler]:
    if not folder.is_dir():
        raise ConfigurationError(f"handler folder {folder} does not exist or is not a folder")
    package = _folder_package(folder)
    for file in sorted(folder.glob("*.py")):
        if file.name.startswith("_"):
            continue
        unique = f"{package}.{file.stem}"
        module = _imported(str(file), lambda file=file, unique=unique: _exec_file(file, unique))
        yield _handler(module, origin=str(file), file=str(file))


def _folder_package(folder: Path) -> str:
    """A fresh private package whose path is `folder`: one per folder, so two folders may
    both hold a docker101.py, and a module's relative imports (`from ._common import x`)
    find the folder's helper files. Modules of an earlier load are forgotten (a reload
    reads the files again)."""
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    name = f"_wodmail_handlers_{tag}"
    for loaded in [key for key in sys.modules if key == name or key.startswith(name + ".")]:
        del sys.modules[loaded]
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    sys.modules[name] = importlib.util.module_from_spec(spec)
    return name


def _exec_file(file: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"no loader for {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _imported(file: str, load: Callable[[], ModuleType]) -> ModuleType:
    try:
        return load()
    except Exception as exc:
        raise ConfigurationError(
            f"handler module {file} failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def _handler(module: ModuleType, *, origin: str, file: str) -> Handler:
    declared = getattr(module, "WORKSHOPS", None)
    if (
        not isinstance(declared, tuple | list)
        or not declared
        or not all(isinstance(name, str) and name for name in declared)
    ):
        raise ConfigurationError(
            f"handler module {file} must declare WORKSHOPS as a tuple of workshop folder "
            f'names, e.g. WORKSHOPS = ("WKSHP-Docker101",); got {declared!r} '
            f"(helper files belong in names starting with '_')"
        )
    for name in declared:
        if name.startswith("CHLG-"):
            raise ConfigurationError(
                f"handler module {file} claims {name}: claim its content folder "
                f"WKSHP-{name.removeprefix('CHLG-')}, which challenges share"
            )
    for phase in PHASES:
        function = getattr(module, phase, None)
        if function is not None and not inspect.iscoroutinefunction(function):
            raise ConfigurationError(
                f"handler module {file}: {phase} must be an async function (async def)"
            )
    return Handler(origin=origin, file=file, module=module, workshops=tuple(declared),
                   provides=_provides(module, file), images=_images(module, file))


def _provides(module: ModuleType, file: str) -> tuple[str, ...]:
    provided = getattr(module, "PROVIDES", ())
    if not isinstance(provided, tuple | list) or not all(
        isinstance(name, str) and VARIABLE_NAME.fullmatch(name) for name in provided
    ):
        raise ConfigurationError(
            f"handler module {file}: PROVIDES must be a tuple of template variable names, "
            f'e.g. PROVIDES = ("HTTPPORT",); got {provided!r}'
        )
    return tuple(provided)


def _images(module: ModuleType, file: str) -> tuple[str, ...]:
    images = getattr(module, "IMAGES", ())
    if not isinstance(images, tuple | list) or not all(
        isinstance(name, str) and name and not name.startswith("-") for name in images
    ):
        raise ConfigurationError(
            f"handler module {file}: IMAGES must be a tuple of image names, "
            f'e.g. IMAGES = ("sparklab:latest",); got {images!r}'
        )
    return tuple(images)


def handler_failure(name: str, exc: BaseException) -> HookFailed:
    trace = "".join(traceback.format_exception(exc))
    return HookFailed(name, f"{type(exc).__name__}: {exc}", output=cap_text(trace))
