"""Ansible's filters and tests that workshop templates use, for wodmail's Jinja environments.

to_json, to_yaml, b64encode, regex_replace, quote, bool, mandatory, ternary, combine, hash
... behave as Ansible's do, on values that may hold undefined markers (a serializer uses,
and so checks, every value it writes). `now()` is Ansible's global. Lookups stay with the
renderer (`lookup('vars', ...)` reads its variables).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os.path
import re
import shlex
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import yaml
from jinja2 import Undefined
from jinja2.exceptions import FilterArgumentError, SecurityError

from wodmail.templating import regexes
from wodmail.templating.budget import Budget
from wodmail.templating.budget import current as budget_of_render
from wodmail.templating.varsfiles import UnsafeText as _UnsafeText
from wodmail.templating.varsfiles import YamlTooLarge, check_expanded_size


def _plain(value: Any) -> Any:
    """`value` as plain dicts, lists and strings, for serializers; uses (checks) undefined.

    Within the render's budget: a value that shares one list many times (YAML aliases,
    `from_yaml` of a "billion laughs") is counted as the serializer will write it out.
    """
    return _Plain(budget_of_render()).copy(value)


class _Plain:
    def __init__(self, budget: Budget | None) -> None:
        self._budget = budget
        self._items = 0

    def copy(self, value: Any) -> Any:
        if self._budget is not None:
            self._items += 1
            self._budget.tick()
            if self._items > self._budget.max_chars:  # each item writes one character or more
                raise SecurityError(
                    f"a value to serialize holds more than {self._budget.max_chars} items"
                    " (the output limit)"
                )
        if isinstance(value, Undefined):
            str(value)  # raises, or records the name while listing
            return None
        if isinstance(value, _UnsafeText):
            return str(value)
        if isinstance(value, Mapping):
            return {key: self.copy(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.copy(item) for item in value]
        return value


try:
    from yaml import CSafeDumper as _SafeDumper
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeDumper as _SafeDumper  # type: ignore[assignment]


def _to_yaml(value: Any, *_args: Any, default_flow_style: bool | None = None, **kwargs: Any) -> str:
    return yaml.dump(
        _plain(value),
        Dumper=_SafeDumper,
        allow_unicode=True,
        default_flow_style=default_flow_style,
        **kwargs,
    )


def _to_nice_yaml(value: Any, indent: int = 4, *_args: Any, **kwargs: Any) -> str:
    kwargs.setdefault("default_flow_style", False)
    return _to_yaml(value, indent=indent, **kwargs)


def _to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(_plain(value), **kwargs)


def _to_nice_json(value: Any, indent: int = 4, sort_keys: bool = True, **kwargs: Any) -> str:
    kwargs.pop("separators", None)
    return _to_json(value, indent=indent, sort_keys=sort_keys, separators=(",", ": "), **kwargs)


def _from_yaml(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    data = yaml.safe_load(value)
    try:
        check_expanded_size(data)
    except YamlTooLarge as exc:
        raise SecurityError(f"from_yaml: {exc}") from None
    return data


def _to_bool(value: Any) -> bool:
    checked = str(value).lower() if isinstance(value, str | int) else value
    if checked in ("yes", "on", "true", "1"):
        return True
    if checked in ("no", "off", "false", "0"):
        return False
    return bool(checked == 1)


def _quote(value: Any) -> str:
    return shlex.quote("" if value is None else str(value))


def _regex_flags(ignorecase: bool, multiline: bool) -> int:
    return (re.IGNORECASE if ignorecase else 0) | (re.MULTILINE if multiline else 0)


def _regex_replace(
    value: Any = "",
    pattern: str = "",
    replacement: str = "",
    ignorecase: bool = False,
    multiline: bool = False,
    count: int = 0,
    mandatory_count: int = 0,
) -> str:
    output, substitutions = regexes.subn(
        "regex_replace", pattern, replacement, str(value), _regex_flags(ignorecase, multiline),
        count,
    )
    if mandatory_count and mandatory_count != substitutions:
        raise FilterArgumentError(
            f"{pattern!r} should match {mandatory_count} times, but matches {substitutions} times"
        )
    return output


def _regex_search(value: Any, pattern: str, *groups: str, **flags: bool) -> Any:
    found = regexes.search(
        "regex_search",
        pattern,
        str(value),
        _regex_flags(flags.get("ignorecase", False), flags.get("multiline", False)),
    )
    if found is None:
        return None
    if not groups:
        return found.group()
    wanted: list[str | int] = []
    for group in groups:
        if named := re.match(r"\\g<(\S+)>", group):
            wanted.append(named.group(1))
        elif numbered := re.match(r"\\(\d+)", group):
            wanted.append(int(numbered.group(1)))
        else:
            raise FilterArgumentError(f"regex_search: unknown group argument {group!r}")
    return [found.group(group) for group in wanted]


def _regex_findall(
    value: Any, pattern: str, multiline: bool = False, ignorecase: bool = False
) -> list[Any]:
    flags = _regex_flags(ignorecase, multiline)
    return regexes.findall("regex_findall", pattern, str(value), flags)


def _regex_escape(value: Any, re_type: str = "python") -> str:
    if re_type == "python":
        return re.escape(str(value))
    if re_type == "posix_basic":
        return _regex_replace(value, r"([].[^$*\\])", r"\\\1")
    raise FilterArgumentError(f"regex_escape: unsupported regex type {re_type!r}")


def _b64encode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(str(value).encode(encoding, "surrogateescape")).decode("ascii")


def _b64decode(value: Any, encoding: str = "utf-8", urlsafe: bool = False) -> str:
    decode = base64.urlsafe_b64decode if urlsafe else base64.b64decode
    return decode(str(value).encode("utf-8", "surrogateescape")).decode(encoding, "surrogateescape")


def _ternary(value: Any, true_value: Any, false_value: Any, none_value: Any = None) -> Any:
    if value is None and none_value is not None:
        return none_value
    return true_value if value else false_value


def _get_hash(value: Any, hashtype: str = "sha1") -> str:
    try:
        digest = hashlib.new(hashtype)
    except ValueError as exc:
        raise FilterArgumentError(f"hash: unsupported hash type {hashtype!r}") from exc
    digest.update(str(value).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _to_uuid(value: Any, namespace: str = "361E6D51-FAEC-444A-9079-341386DA8E2E") -> str:
    return str(uuid.uuid5(uuid.UUID(str(namespace)), str(value)))


def _combine(*terms: Mapping[str, Any], recursive: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for term in terms:
        for key, value in term.items():
            if recursive and isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                result[key] = _combine(result[key], value, recursive=True)
            else:
                result[key] = value
    return result


def _dict2items(
    value: Mapping[str, Any], key_name: str = "key", value_name: str = "value"
) -> list[dict[str, Any]]:
    return [{key_name: key, value_name: item} for key, item in value.items()]


def _items2dict(
    items: Iterable[Mapping[str, Any]], key_name: str = "key", value_name: str = "value"
) -> dict[Any, Any]:
    return {item[key_name]: item[value_name] for item in items}


def _flatten(
    values: Iterable[Any], levels: int | None = None, skip_nulls: bool = True
) -> list[Any]:
    flat: list[Any] = []
    for item in values:
        if skip_nulls and item in (None, "None", "null"):
            continue
        if isinstance(item, list | tuple) and (levels is None or levels >= 1):
            flat.extend(_flatten(item, None if levels is None else levels - 1, skip_nulls))
        else:
            flat.append(item)
    return flat


def _strftime(string_format: str, second: float | None = None, utc: bool = False) -> str:
    return time.strftime(string_format, (time.gmtime if utc else time.localtime)(second))


def _path_filter(function: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda value: function(str(value))


FILTERS: dict[str, Callable[..., Any]] = {
    "to_json": _to_json,
    "to_nice_json": _to_nice_json,
    "from_json": json.loads,
    "to_yaml": _to_yaml,
    "to_nice_yaml": _to_nice_yaml,
    "from_yaml": _from_yaml,
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "bool": _to_bool,
    "quote": _quote,
    "regex_replace": _regex_replace,
    "regex_search": _regex_search,
    "regex_findall": _regex_findall,
    "regex_escape": _regex_escape,
    "ternary": _ternary,
    "hash": _get_hash,
    "md5": lambda value: _get_hash(value, "md5"),
    "sha1": lambda value: _get_hash(value, "sha1"),
    "checksum": lambda value: _get_hash(value, "sha1"),
    "to_uuid": _to_uuid,
    "combine": _combine,
    "dict2items": _dict2items,
    "items2dict": _items2dict,
    "flatten": _flatten,
    "strftime": _strftime,
    "to_datetime": lambda value, fmt="%Y-%m-%d %H:%M:%S": datetime.strptime(str(value), fmt),
    "basename": _path_filter(os.path.basename),
    "dirname": _path_filter(os.path.dirname),
    "splitext": _path_filter(os.path.splitext),
    "normpath": _path_filter(os.path.normpath),
    "path_join": lambda parts: os.path.join(*parts) if not isinstance(parts, str) else parts,
    "type_debug": lambda value: type(value).__name__,
}


def _regex_test(name: str, function: Callable[..., Any]) -> Callable[..., bool]:
    def test(
        value: Any, pattern: str = "", ignorecase: bool = False, multiline: bool = False
    ) -> bool:
        flags = _regex_flags(ignorecase, multiline)
        return function(f"the {name!r} test", pattern, str(value), flags) is not None

    return test


TESTS: dict[str, Callable[..., bool]] = {
    "match": _regex_test("match", regexes.match),
    "search": _regex_test("search", regexes.search),
    "regex": _regex_test("regex", regexes.search),
}


def now(utc: bool = False, fmt: str | None = None) -> Any:
    moment = datetime.now(UTC).replace(tzinfo=None) if utc else datetime.now()
    return moment.strftime(fmt) if fmt else moment
