"""One HTTP/1.x request as the status listener reads it: its request line and headers.

Only what four GET endpoints need; anything else is a `BadRequest` with a one-line reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

VERSIONS = ("HTTP/1.0", "HTTP/1.1")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110 token)


class BadRequest(ValueError):
    """A request the listener cannot answer: 400 with this one-line message."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    version: str
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value), in order

    def values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


def parse_head(head: bytes) -> Request:
    """The request in `head` (everything up to and including the empty line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method, target, version = parts
    if version not in VERSIONS:
        raise BadRequest(f"unsupported protocol version (use {' or '.join(VERSIONS)})")
    if not target.startswith("/"):
        raise BadRequest("the request target must be a path, e.g. /jobs")
    url = urlsplit(target)
    return Request(
        method=method,
        path=url.path,
        query=parse_qs(url.query, keep_blank_values=True),
        version=version,
        headers=tuple(_header(line) for line in lines[1:] if line),
    )


def _header(line: str) -> tuple[str, str]:
    if line[0] in " \t":
        raise BadRequest("folded header lines are not accepted")
    name, colon, value = line.partition(":")
    if not colon or not _TOKEN.fullmatch(name):
        raise BadRequest("malformed header line")
    return name.lower(), value.strip(" \t")
