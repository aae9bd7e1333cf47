"""Regular expressions of templates: Python's `re` semantics, run with a timeout.

Ansible's regex filters use `re`, whose matching holds the GIL and cannot be interrupted:
a catastrophic pattern (`(a|aa)+$` on a long run of `a` and one `b`) would freeze the whole
daemon, SMTP intake included, for as long as it backtracks. Here every match runs on the
`regex` module, which releases the GIL while it matches and gives up after a timeout (the
render's time left), so such a template fails its file, naming the filter, within the limit.

To match exactly what `re` matches, a pattern is first compiled by `re` (its errors are
Ansible's), then given to `regex` (version 0, its `re`-compatible mode) with
the few constructs `regex` reads differently from `re` made literal as `re` reads them:
a `[` inside a set (`regex` would read `[[:alpha:]]` as a POSIX class) and a `{` that is no
`{m,n}` repeat (`regex` would read `{e<=1}` as fuzzy matching). Replacement templates are
checked by `re` the same way; `regex` expands those `re` accepts identically.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import regex
from jinja2.exceptions import SecurityError

from wodmail.templating.budget import seconds_left

T = TypeVar("T")

_REPEAT = re.compile(r"\{\d*(?:,\d*)?\}")
_SCOPED_FLAGS = re.compile(r"\(\?([aiLmsux]*)(?:-([imsx]*))?([:)])")
# re warns (FutureWarning) about a '[' or '--' ... inside a set it reads literally; the
# translation keeps that reading, and a daemon whose log is JSON lines prints no such text.
warnings.filterwarnings(
    "ignore", "Possible (nested set|set )", FutureWarning, r"wodmail\.templating\.regexes"
)
_FLAGS = {re.IGNORECASE: regex.IGNORECASE, re.MULTILINE: regex.MULTILINE,
          re.DOTALL: regex.DOTALL, re.VERBOSE: regex.VERBOSE, re.ASCII: regex.ASCII}


def search(what: str, pattern: str, text: str, flags: int = 0) -> Any:
    """`re.search(pattern, text, flags)`, as the filter or test `what`."""
    compiled = _compiled(pattern, flags)
    return _timed(what, pattern, lambda timeout: compiled.search(text, timeout=timeout))


def match(what: str, pattern: str, text: str, flags: int = 0) -> Any:
    """`re.match(pattern, text, flags)`, as the filter or test `what`."""
    compiled = _compiled(pattern, flags)
    return _timed(what, pattern, lambda timeout: compiled.match(text, timeout=timeout))


def findall(what: str, pattern: str, text: str, flags: int = 0) -> list[Any]:
    """`re.findall(pattern, text, flags)`, as the filter `what`."""
    compiled = _compiled(pattern, flags)
    return _timed(what, pattern, lambda timeout: compiled.findall(text, timeout=timeout))


def subn(
    what: str, pattern: str, replacement: str, text: str, flags: int = 0, count: int = 0
) -> tuple[str, int]:
    """`re.subn(pattern, replacement, text, count, flags)`, as the filter `what`."""
    compiled = _compiled(pattern, flags)
    _check_replacement(pattern, flags, replacement)
    return _timed(
        what, pattern,
        lambda timeout: compiled.subn(replacement, text, count=count, timeout=timeout),
    )


def _timed(what: str, pattern: str, run: Callable[[float], T]) -> T:
    left, limit = seconds_left()
    if left <= 0:  # spent before this filter started (regex would time out at once)
        raise SecurityError(f"rendering took longer than the {limit:g} s limit")
    try:
        return run(left)
    except TimeoutError:
        raise SecurityError(
            f"{what}: the pattern {pattern!r} was still matching when the render's"
            f" {limit:g} s limit ran out (catastrophic backtracking)"
        ) from None


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str, flags: int) -> Any:
    checked = re.compile(pattern, flags)  # re's errors, as under Ansible
    translated = re_compatible(pattern, verbose=bool(checked.flags & re.VERBOSE))
    regex_flags = regex.VERSION0
    for re_flag, regex_flag in _FLAGS.items():
        if flags & re_flag:
            regex_flags |= regex_flag
    return regex.compile(translated, regex_flags)


@functools.lru_cache(maxsize=256)
def _check_replacement(pattern: str, flags: int, replacement: str) -> None:
    # re compiles the template before it looks for a match: an empty text checks it.
    re.compile(pattern, flags).sub(replacement, "")


def re_compatible(pattern: str, *, verbose: bool = False) -> str:
    """`pattern` (one `re` compiles) written so that `regex` reads it as `re` does."""
    return _Translator(pattern, verbose).run()


class _Translator:
    """One left-to-right pass over a pattern, tracking sets, comments and verbose scopes."""

    def __init__(self, pattern: str, verbose: bool) -> None:
        self.pattern = pattern
        self.out: list[str] = []
        self.at = 0
        self.verbose = [verbose]  # one entry per open group

    def run(self) -> str:
        while self.at < len(self.pattern):
            self._step()
        return "".join(self.out)

    def _step(self) -> None:
        char = self.pattern[self.at]
        if char == "\\":
            self._escape()
        elif char == "[":
            self._set()
        elif char == "{":
            self._brace()
        elif char == "(":
            self._group()
        elif char == ")":
            if len(self.verbose) > 1:
                self.verbose.pop()
            self._copy(1)
        elif char == "#" and self.verbose[-1]:
            end = self.pattern.find("\n", self.at)
            self._copy((len(self.pattern) if end == -1 else end) - self.at)
        else:
            self._copy(1)

    def _copy(self, length: int) -> None:
        self.out.append(self.pattern[self.at : self.at + length])
        self.at += length

    def _escape(self) -> None:
        # \N{NAME} holds braces that are not a repeat; any other escape is two characters.
        if self.pattern.startswith("\\N{", self.at):
            end = self.pattern.find("}", self.at)
            self._copy((len(self.pattern) if end == -1 else end + 1) - self.at)
        else:
            self._copy(2)

    def _set(self) -> None:
        self._copy(1)
        if self.pattern.startswith("^", self.at):
            self._copy(1)
        if self.pattern.startswith("]", self.at):
            self._copy(1)  # a ']' first in a set is a literal
        while self.at < len(self.pattern):
            char = self.pattern[self.at]
            if char == "]":
                self._copy(1)
                return
            if char == "\\":
                self._escape()
            elif char == "[":
                self.out.append("\\[")  # re: always a literal '['
                self.at += 1
            else:
                self._copy(1)

    def _brace(self) -> None:
        repeat = _REPEAT.match(self.pattern, self.at)
        if repeat is not None and repeat.group() != "{}":
            self._copy(repeat.end() - self.at)
        else:
            self.out.append("\\{")  # re: a literal '{'
            self.at += 1

    def _group(self) -> None:
        if self.pattern.startswith("(?#", self.at):
            end = self.pattern.find(")", self.at)
            self._copy((len(self.pattern) if end == -1 else end + 1) - self.at)
            return
        flags = _SCOPED_FLAGS.match(self.pattern, self.at)
        if flags is not None and flags.group(3) == ")":
            if "x" in flags.group(1):  # a global flag (re takes them at the start only)
                self.verbose = [True for _ in self.verbose]
            self._copy(flags.end() - self.at)
            return
        verbose = self.verbose[-1]
        if flags is not None:
            verbose = (verbose or "x" in flags.group(1)) and "x" not in (flags.group(2) or "")
            self.verbose.append(verbose)
            self._copy(flags.end() - self.at)
            return
        self.verbose.append(verbose)
        self._copy(1)
