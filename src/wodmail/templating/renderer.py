"""Rendering workshop files the way Ansible's `template` module does.

Existing workshops were written for the Ansible playbook of the old backend, so a file
must come out byte for byte as that module would write it (ansible-core 2.17 and 2.19):

- Jinja with `trim_blocks` on and `lstrip_blocks` off, in a sandbox; undefined variables
  are errors; CRLF and CR become LF; `None` renders as '' and `True` as 'True'.
- The source's trailing newlines are kept (Jinja drops one; it is added back). One known
  divergence: a file that is a single `{{ expr }}` with a non-string value (a number, a
  list) loses its trailing newline under ansible-core 2.19 only; here, as under 2.17, the
  newline is kept.
- A text without `{{`, `{%` or `{#` is not a template: it is returned unchanged, CRLF and
  all (Ansible skips such strings).
- Variable values are templates too. They are expanded lazily, when a template uses them,
  with the full variable set in scope, and a value that is a single `{{ expr }}` keeps the
  expression's native type. A value that cannot be expanded (an undefined variable, a
  loop, a syntax error) becomes a marker that fails only when used, so unused variables
  such as `{{ ansible_env.STUDDIR }}` in a stock `all.yml` do no harm.
- Keys that are not identifiers are reachable as `hostvars[inventory_hostname]['IP-X']`
  (and `vars['IP-X']`), as in Ansible.

The usual Ansible filters of workshop notebooks (to_json, to_yaml, b64encode,
regex_replace, quote, bool, ternary ... in `wodmail.templating.filters`; `mandatory` here, as
it needs the undefined-tracking) are provided; lookup plugins are not, except
`lookup('vars', name)`.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import (
    FunctionLoader,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    nodes,
    pass_context,
)
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.runtime import Context, missing
from jinja2.sandbox import SandboxedEnvironment

from wodmail.errors import TemplateError
from wodmail.templating.budget import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIME_LIMIT_SECONDS
from wodmail.templating.budget import Budget as _Budget
from wodmail.templating.budget import current as budget_of_render
from wodmail.templating.budget import limited as _limited
from wodmail.templating.filters import FILTERS as _FILTERS
from wodmail.templating.filters import TESTS as _TESTS
from wodmail.templating.filters import now as _now
from wodmail.templating.varsfiles import UnsafeText as _UnsafeText
from wodmail.templating.varsfiles import load_vars_file
from wodmail.templating.vault import Vault

__all__ = [
    "Renderer",
    "layer_variables",
    "load_vars_file",
    "looks_like_template",
]

_START_STRINGS = ("{{", "{%", "{#")
_START_BYTES = tuple(s.encode() for s in _START_STRINGS)
_OVERRIDE_HEADER = "#jinja2:"
_OVERRIDE_KEYS = frozenset(
    {
        "block_start_string",
        "block_end_string",
        "variable_start_string",
        "variable_end_string",
        "comment_start_string",
        "comment_end_string",
        "line_statement_prefix",
        "line_comment_prefix",
        "trim_blocks",
        "lstrip_blocks",
        "newline_sequence",
        "keep_trailing_newline",
    }
)
# Where the variables of a render travel inside Jinja's context (see _LazyContext).
_VARIABLES_KEY = "__wodmail_variables__"
# Code "file names" of compiled templates, to find a file's line in a traceback.
_FILE_CODE = "<wodmail-file>"
_VALUE_CODE = "<wodmail-variable>"
MODES = frozenset({"WKSHP", "CHLG"})

# When set, undefined values record their names here instead of raising (listing mode).
_RECORDER: ContextVar[set[str] | None] = ContextVar("wodmail_undefined_recorder", default=None)


def looks_like_template(text: str | bytes) -> bool:
    """Whether Ansible would treat `text` as a template at all (else it is used unchanged)."""
    if isinstance(text, bytes):
        return text.startswith(_OVERRIDE_HEADER.encode()) or any(s in text for s in _START_BYTES)
    return text.startswith(_OVERRIDE_HEADER) or any(s in text for s in _START_STRINGS)


# --- undefined values ---------------------------------------------------------------------


class _WodUndefined(Undefined):
    """Ansible's strict undefined; while a recorder is active it records its use instead."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        if self._names_a_variable():
            return f"undefined variable {self._undefined_name!r}"
        return Undefined._undefined_message.fget(self)  # type: ignore[attr-defined,no-any-return]

    def _names_a_variable(self) -> bool:
        return self._undefined_obj is missing or isinstance(self._undefined_obj, _VariablesView)

    def _missing_names(self) -> frozenset[str]:
        if self._names_a_variable():
            return frozenset({str(self._undefined_name)})
        return frozenset({self._undefined_message})

    def _use(self) -> None:
        recorder = _RECORDER.get()
        names = self._missing_names()
        if recorder is None or not names:
            raise self._undefined_exception(self._undefined_message)
        recorder.update(names)

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        self._use()
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = _fail_with_undefined_error
    __mul__ = __rmul__ = __div__ = __rdiv__ = _fail_with_undefined_error
    __truediv__ = __rtruediv__ = _fail_with_undefined_error
    __floordiv__ = __rfloordiv__ = _fail_with_undefined_error
    __mod__ = __rmod__ = _fail_with_undefined_error
    __pos__ = __neg__ = _fail_with_undefined_error
    __call__ = __getitem__ = _fail_with_undefined_error
    __lt__ = __le__ = __gt__ = __ge__ = _fail_with_undefined_error
    __pow__ = __rpow__ = _fail_with_undefined_error

    def __int__(self) -> int:
        self._use()
        return 0

    def __float__(self) -> float:
        self._use()
        return 0.0

    def __complex__(self) -> complex:
        self._use()
        return 0j

    def __str__(self) -> str:
        self._use()
        return ""

    def __len__(self) -> int:
        self._use()
        return 0

    def __iter__(self) -> Any:
        self._use()
        return iter(())

    def __bool__(self) -> bool:
        self._use()
        return False

    def __eq__(self, other: object) -> bool:
        self._use()
        return type(self) is type(other)

    def __ne__(self, other: object) -> bool:
        self._use()
        return type(self) is not type(other)

    def __hash__(self) -> int:
        self._use()
        return id(type(self))

    def __contains__(self, item: object) -> bool:
        self._use()
        return False


class _ExpansionFailure(_WodUndefined):
    """The value of a variable that could not be expanded; fails (or records) when used."""

    __slots__ = ("_names",)

    def __init__(self, message: str, names: frozenset[str] = frozenset()) -> None:
        super().__init__(hint=message)
        self._names = names

    def _missing_names(self) -> frozenset[str]:
        return self._names


# --- variables --------------------------------------------------------------------------


class _Variables:
    """The variables of one Renderer: each expanded on first use, then cached."""

    def __init__(self, raw: Mapping[str, Any], hostname: str) -> None:
        self._raw = dict(raw)
        self._expanded: dict[str, Any] = {}
        self._resolving: list[str] = []
        self.view = _VariablesView(self)
        self.hostvars = {hostname: self.view}

    def names(self) -> list[str]:
        return list(self._raw)

    def get(self, name: str) -> Any:
        """The expanded value of `name`, or jinja's `missing` when it is not defined."""
        if name in self._expanded:
            return self._expanded[name]
        if name not in self._raw:
            return missing
        if name in self._resolving:
            chain = " -> ".join([*self._resolving[self._resolving.index(name) :], name])
            return _ExpansionFailure(f"recursive loop in the value of {name!r} ({chain})")
        self._resolving.append(name)
        # A value is expanded strictly even while listing: failures become markers.
        token = _RECORDER.set(None)
        try:
            value = self._expand(self._raw[name], name)
        finally:
            _RECORDER.reset(token)
            self._resolving.pop()
        self._expanded[name] = value
        return value

    def _expand(self, value: Any, label: str) -> Any:
        if isinstance(value, str):
            if isinstance(value, _UnsafeText) or not looks_like_template(value):
                return value
            return self._expand_text(value, label)
        if isinstance(value, Mapping):
            return {key: self._expand(item, f"{label}.{key}") for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._expand(item, f"{label}[{index}]") for index, item in enumerate(value)]
        return value

    def _expand_text(self, text: str, label: str) -> Any:
        try:
            return _render(_VALUE_ENVIRONMENT, text, self)
        except TemplateSyntaxError as exc:
            return _ExpansionFailure(f"syntax error in the value of {label!r}: {exc.message}")
        except UndefinedError as exc:
            where = f"{exc.message} (in the value of {label!r})"
            return _ExpansionFailure(where, self._undefined_in(text))
        except Exception as exc:  # a filter or test failed: report it where the value is used
            return _ExpansionFailure(f"{_describe(exc)} (in the value of {label!r})")

    def _undefined_in(self, text: str) -> frozenset[str]:
        recorder: set[str] = set()
        token = _RECORDER.set(recorder)
        try:
            _render(_VALUE_ENVIRONMENT, text, self)
        except Exception:  # noqa: S110 - the strict expansion already reported the failure
            pass
        finally:
            _RECORDER.reset(token)
        return frozenset(recorder)


class _VariablesView(Mapping[str, Any]):
    """`hostvars[inventory_hostname]` and `vars`: every variable, by any key."""

    def __init__(self, variables: _Variables) -> None:
        self._variables = variables

    def __getitem__(self, key: str) -> Any:
        value = self._variables.get(key) if isinstance(key, str) else missing
        if value is missing:
            raise KeyError(key)
        return value

    def __iter__(self) -> Any:
        return iter(self._variables.names())

    def __len__(self) -> int:
        return len(self._variables.names())


class _LazyContext(Context):
    """A Jinja context that takes variables from a _Variables, expanding them on access."""

    def __init__(
        self,
        environment: Any,
        parent: dict[str, Any],
        name: str | None,
        blocks: dict[str, Any],
        globals: Any = None,  # noqa: A002 - jinja's own parameter name
    ) -> None:
        super().__init__(environment, parent, name, blocks, globals)
        self._wod_variables: _Variables | None = parent.get(_VARIABLES_KEY)

    def resolve_or_missing(self, key: str) -> Any:
        if key in self.vars:
            return self.vars[key]
        variables = self._wod_variables
        if variables is not None:
            if key == "hostvars":
                return variables.hostvars
            if key == "vars":
                return variables.view
            value = variables.get(key)
            if value is not missing:
                return value
        if key in self.parent:
            return self.parent[key]
        return missing


# --- filters that need the undefined-tracking ---------------------------------------------


def _mandatory(value: Any, msg: str | None = None) -> Any:
    if isinstance(value, Undefined):
        if _RECORDER.get() is not None:
            str(value)  # records the name
            return value
        if msg is not None:
            raise FilterArgumentError(msg)
        if isinstance(value, _WodUndefined) and value._names_a_variable():
            raise FilterArgumentError(f"mandatory variable {value._undefined_name!r} not defined")
        raise FilterArgumentError("mandatory variable not defined")
    return value


# --- lookups (they read the renderer's variables) ----------------------------------------


@pass_context
def _lookup(context: Context, plugin: str, *terms: Any, **options: Any) -> Any:
    variables: _Variables | None = getattr(context, "_wod_variables", None)
    if plugin != "vars" or variables is None:
        raise SecurityError(f"lookup plugin {plugin!r} is not supported by wodmail (only 'vars')")
    values = []
    for term in terms:
        value = variables.get(str(term))
        if value is missing:
            if "default" in options:
                value = options["default"]
            else:
                value = context.environment.undefined(name=str(term))
                str(value)  # fails, or records while listing
        values.append(value)
    return values[0] if len(values) == 1 and not options.get("wantlist") else values


# --- environments and the render core ---------------------------------------------------


# --- resource limits ----------------------------------------------------------------------
#
# Each render gets a budget (wodmail.templating.budget): the output's size, the size of any
# string or list built on the way (`*`, `+`, `~`, `%` and calls with huge counts are checked
# before they run), and wall time (checked at every loop iteration, call and output piece;
# the regex filters run with the time left as their timeout). None of this changes what a
# template within its budget renders.

_FORMAT_WIDTH = re.compile(r"\d{8,}")  # a width or precision of 10**7 or more


def _budget() -> _Budget | None:
    return budget_of_render()


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _check_binop(operator: str, left: Any, right: Any) -> None:
    budget = _budget()
    if budget is None:
        return
    budget.tick()
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            length = _sized(seq)
            if length is not None and isinstance(count, int) and not isinstance(count, bool):
                budget.size(length * max(count, 0), "'*' would build a value")
    elif operator == "+":
        left_size, right_size = _sized(left), _sized(right)
        if left_size is not None and right_size is not None:
            budget.size(left_size + right_size, "'+' would build a value")
    elif operator == "%" and isinstance(left, str) and _FORMAT_WIDTH.search(left):
        raise SecurityError("'%' format with a width of 10 million or more")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        budget.size(left.bit_length() * right // 3, "'**' would build a number")


def _check_arguments(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A method of a string or list asked for a width or count beyond the output limit
    (`'a'.ljust(10**9)`, `.center`, `.zfill` ...), or a format with a huge width, would build
    that much: refuse it first."""
    budget = _budget()
    if budget is None:
        return
    budget.tick()
    if not isinstance(target, str | bytes | list):
        return
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool):
            budget.size(value, "an argument asking for a value")
    if isinstance(target, str) and _FORMAT_WIDTH.search(target):
        raise SecurityError("a format with a width of 10 million or more")


# Filters that build output in proportion to a width or count argument.
_SIZED_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate", "format"})


def _budget_iter(iterable: Any) -> Any:
    """Every template `for` loop iterates through this: the clock is checked as it goes."""
    budget = _budget()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.tick()
        yield item


def _budget_concat(*values: Any) -> str:
    """The `~` operator, with the size checked before the string is built."""
    texts = [str(value) for value in values]
    budget = _budget()
    if budget is not None:
        budget.tick()
        budget.size(sum(len(text) for text in texts), "'~' would build a string")
    return "".join(texts)


def _limited_filter(function: Callable[..., Any], *, counts: bool) -> Callable[..., Any]:
    """`function` checked first: its int arguments if they are counts or widths (`counts`),
    and a format string's widths."""

    @functools.wraps(function)
    def limited(value: Any, *args: Any, **kwargs: Any) -> Any:
        target = value if isinstance(value, str) else ""
        _check_arguments(target, args if counts else (), kwargs if counts else {})
        return function(value, *args, **kwargs)

    return limited


def _budget_checks(tree: nodes.Template) -> nodes.Template:
    """Route every loop and `~` of a parsed template through the budget."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(
            nodes.EnvironmentAttribute("budget_iter"), [loop.iter], [], None, None
        )
    for concat in list(tree.find_all(nodes.Concat)):
        call = nodes.Call(nodes.EnvironmentAttribute("budget_concat"), concat.nodes, [], None,
                          None)
        _replace(tree, concat, call)
    return tree


def _replace(tree: nodes.Node, old: nodes.Node, new: nodes.Node) -> None:
    for parent in tree.find_all(nodes.Node):
        for field, value in parent.iter_fields():
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(item is old for item in value):
                setattr(parent, field, [new if item is old else item for item in value])
                return


class _FileEnvironment(SandboxedEnvironment):
    context_class = _LazyContext
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    budget_iter = staticmethod(_budget_iter)
    budget_concat = staticmethod(_budget_concat)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's own signature
        _check_arguments(getattr(__obj, "__self__", None), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _budget_checks(super()._parse(source, name, filename))


class _NativeCodeGenerator(NativeCodeGenerator):
    """Keeps a lone constant's type (`{{ 5 }}` is 5), as Ansible's concat does."""

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        items = list(group)
        if len(items) == 1:
            return repr(items[0])
        return repr("".join(str(item) for item in items))


class _ValueEnvironment(_FileEnvironment):
    code_generator_class = _NativeCodeGenerator


def _none_as_empty(value: Any) -> Any:
    return "" if value is None else value


def _make_environment(cls: type[SandboxedEnvironment], **options: Any) -> SandboxedEnvironment:
    environment = cls(
        trim_blocks=True,
        lstrip_blocks=False,
        keep_trailing_newline=False,
        newline_sequence="\n",
        undefined=_WodUndefined,
        autoescape=False,
        loader=FunctionLoader(lambda _name: None),  # nothing to include: TemplateNotFound
        **options,
    )
    environment.filters.update(_FILTERS, mandatory=_mandatory)
    for name in _SIZED_FILTERS:
        environment.filters[name] = _limited_filter(
            environment.filters[name], counts=name != "format"
        )
    environment.tests.update(_TESTS)
    environment.globals.update(lookup=_lookup, query=_lookup, q=_lookup, now=_now)
    return environment


_FILE_ENVIRONMENT = _make_environment(_FileEnvironment, finalize=_none_as_empty)
_VALUE_ENVIRONMENT = _make_environment(_ValueEnvironment)


@lru_cache(maxsize=64)
def _overlay(environment: SandboxedEnvironment, overrides: tuple[tuple[str, Any], ...]) -> Any:
    return environment.overlay(**dict(overrides))


def _split_override_header(text: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """Ansible's `#jinja2: key: value, ...` first line, as (rest of the text, overrides)."""
    if not text.startswith(_OVERRIDE_HEADER):
        return text, ()
    end = text.find("\n")
    if end == -1:
        raise TemplateSyntaxError(f"missing newline after the {_OVERRIDE_HEADER!r} line", 1)
    overrides = []
    for pair in text[len(_OVERRIDE_HEADER) : end].split(","):
        key, separator, raw_value = pair.partition(":")
        key = key.strip()
        if not separator or key not in _OVERRIDE_KEYS:
            raise TemplateSyntaxError(f"invalid {_OVERRIDE_HEADER!r} override {pair.strip()!r}", 1)
        try:
            overrides.append((key, ast.literal_eval(raw_value.strip())))
        except (ValueError, SyntaxError) as exc:
            raise TemplateSyntaxError(f"invalid {_OVERRIDE_HEADER!r} value for {key!r}", 1) from exc
    return text[end + 1 :], tuple(overrides)


@lru_cache(maxsize=512)
def _compile(environment: SandboxedEnvironment, source: str) -> Template:
    code_name = _VALUE_CODE if isinstance(environment, _ValueEnvironment) else _FILE_CODE
    code = environment.compile(source, filename=code_name)
    return environment.template_class.from_code(environment, code, environment.make_globals(None))


def _concat_native(nodes: Iterable[Any]) -> Any:
    """Ansible's concat: None nodes dropped; one node keeps its type; else joined as text."""
    values = [node for node in nodes if node is not None]
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return "".join(str(value) for value in values)


def _within_budget(pieces: Iterable[Any]) -> Iterable[Any]:
    """The output pieces, their total size checked as they come (before they are joined)."""
    budget = _budget()
    if budget is None:
        yield from pieces
        return
    total = 0
    for piece in pieces:
        budget.tick()
        if isinstance(piece, str):
            total += len(piece)
            budget.size(total, "template output")
        yield piece


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


def _render(environment: SandboxedEnvironment, text: str, variables: _Variables) -> Any:
    """Render `text`; a str result gets the source's trailing newlines back, as Ansible does."""
    source, overrides = _split_override_header(text)
    if overrides:
        environment = _overlay(environment, overrides)
    template = _compile(environment, source)
    context = template.new_context({_VARIABLES_KEY: variables})
    try:
        pieces = _within_budget(template.root_render_func(context))
        if isinstance(environment, _ValueEnvironment):
            result = _concat_native(pieces)
        else:
            result = "".join(pieces)
    except Exception:
        environment.handle_exception()
    if isinstance(result, str):
        missing_newlines = _trailing_newlines(text) - _trailing_newlines(result)
        if missing_newlines > 0:
            result += "\n" * missing_newlines
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateNotFound):
        return f"include/import of {exc.name!r} is not supported (workshop files stand alone)"
    if isinstance(exc, UndefinedError | SecurityError | FilterArgumentError):
        return str(exc.message)
    return f"{type(exc).__name__}: {exc}"


def _template_line(traceback: TracebackType | None) -> int | None:
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _FILE_CODE:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _runtime_error(name: str, exc: Exception) -> TemplateError:
    line = _template_line(exc.__traceback__)
    where = f" (line {line})" if line is not None else ""
    return TemplateError(name, f"{_describe(exc)}{where}")


def _syntax_error(name: str, exc: TemplateSyntaxError) -> TemplateError:
    return TemplateError(name, f"template syntax error at line {exc.lineno}: {exc.message}")


class Renderer:
    """Renders workshop files with one fixed set of variables, as Ansible's `template` would.

    Variable values are expanded on first use and cached, so one Renderer serves all the
    files of one deploy. Not thread-safe: use one per deploy (they are cheap).
    """

    def __init__(
        self,
        variables: Mapping[str, Any],
        *,
        hostname: str = "localhost",
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        time_limit_seconds: float = DEFAULT_TIME_LIMIT_SECONDS,
    ) -> None:
        self._limits = (max_output_chars, time_limit_seconds)
        raw = dict(variables)
        raw.setdefault("inventory_hostname", hostname)
        self._variables = _Variables(raw, hostname=str(raw["inventory_hostname"]))

    def render(self, text: str, name: str) -> str:
        """`text` rendered; `name` (e.g. 'WKSHP-X/1-Intro.ipynb') is used in errors.

        Raises TemplateError naming the file and the undefined variable or syntax error line.
        """
        if not looks_like_template(text):
            return text
        token = _RECORDER.set(None)
        try:
            with _limited(*self._limits):
                result = _render(_FILE_ENVIRONMENT, text, self._variables)
        except TemplateSyntaxError as exc:
            raise _syntax_error(name, exc) from None
        except Exception as exc:
            raise _runtime_error(name, exc) from exc
        finally:
            _RECORDER.reset(token)
        return str(result)

    def value(self, name: str) -> Any:
        """The expanded value of variable `name` (native type); KeyError if undefined.

        Raises TemplateError when the value cannot be expanded (an undefined variable in
        it, a syntax error ...), naming the variable.
        """
        value = self._variables.get(name)
        if value is missing:
            raise KeyError(name)
        if isinstance(value, Undefined):
            try:
                str(value)
            except Exception as exc:
                raise TemplateError(name, _describe(exc)) from None
        return value

    def undefined_variables(self, text: str, name: str) -> set[str]:
        """Every undefined variable that rendering `text` would use, not only the first.

        Names are variable names (including `hostvars[...]` keys and variables used inside
        other variables' values); a missing key of an existing dict is described instead,
        e.g. "'dict object' has no attribute 'port'". Raises TemplateError for a syntax
        error or a failure not caused by an undefined variable.
        """
        if not looks_like_template(text):
            return set()
        recorder: set[str] = set()
        token = _RECORDER.set(recorder)
        try:
            with _limited(*self._limits):
                _render(_FILE_ENVIRONMENT, text, self._variables)
        except TemplateSyntaxError as exc:
            raise _syntax_error(name, exc) from None
        except UndefinedError as exc:  # a value that is broken, not undefined (loop, syntax)
            raise _runtime_error(name, exc) from exc
        except Exception as exc:
            # Carrying on past an undefined value can trip something else: report the cause.
            if not recorder:
                raise _runtime_error(name, exc) from exc
        finally:
            _RECORDER.reset(token)
        return recorder


# --- layering ---------------------------------------------------------------------------


def layer_variables(
    config_vars: Mapping[str, Any],
    public_vars_file: Path | None,
    private_vars_file: Path | None,
    student_vars: Mapping[str, Any],
    *,
    stdid: int,
    workshop_ws: str,
    challenge_w: str,
    mode: str,
    password: str | None,
    extra_vars: Mapping[str, Any] | None = None,
    vault: Vault | None = None,
) -> dict[str, Any]:
    """The template variables of one CREATE, later layers winning (LIFECYCLE, deploy step 4).

    Vars files that do not exist are skipped, as the old playbook did. `extra_vars` are the
    installation's `-e` options (WODANSPLAYOPT, WODANSPRIVOPT): as under ansible-playbook,
    they win over the workshop's files and the per-student variables. STDID is a string,
    as it was when passed with `ansible-playbook -e STDID=N`; DIR is empty, as the old
    backend passed it. PASSSTU is defined only when a `password` is given (workshops
    flagged `ldap` or `varpass`): a template that uses it otherwise fails as it did under
    Ansible, rather than showing an empty password. The result holds that password: never
    log it.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
    layered = dict(config_vars)
    for path in (public_vars_file, private_vars_file):
        if path is not None and path.is_file():
            layered.update(load_vars_file(path, vault))
    layered.update(student_vars)
    layered.update(extra_vars or {})
    layered.update(
        STDID=str(stdid),
        WORKSHOP=workshop_ws,
        CHALLENGE=challenge_w,
        MODEWS=mode,
        DIR="",
    )
    if password is not None:
        layered["PASSSTU"] = password
    return layered
