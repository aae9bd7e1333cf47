"""A student's port on an appliance: a base port from the configuration, plus the student's
offset in the workshop's range, as the stock create scripts computed it
(`port = BASE + N - range[0]`)."""

from __future__ import annotations

from wodmail.errors import ConfigurationError
from wodmail.hooks.context import HookContext


def student_offset(ctx: HookContext) -> int:
    """N - range[0]: the student's place in the workshop's range."""
    student = ctx.student
    if student is None:
        raise ConfigurationError(f"{ctx.workshop}: a port is per student, and this run has none")
    first = ctx.range_min
    if first is None:
        raise ConfigurationError(
            f"{ctx.workshop} has no student range in its workshop record: its ports are "
            f"allocated from the range's first student"
        )
    if student < first:
        raise ConfigurationError(
            f"student{student} is below the range of {ctx.workshop} (first student {first})"
        )
    return student - first


def student_port(ctx: HookContext, key: str) -> int:
    """The port of `ctx.student` from the base port in configuration variable `key`
    (e.g. `HTTPPORT-WKSHP-Spark101`); ConfigurationError naming the key when it is unset,
    not a number, or gives a port outside 1-65535."""
    value = ctx.variable(key)
    try:
        base = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"{key} = {value!r} is not a port number") from None
    port = base + student_offset(ctx)
    if not 0 < port <= 65535:
        raise ConfigurationError(
            f"{key} = {base}: student{ctx.student} would get port {port}, outside 1-65535"
        )
    return port
