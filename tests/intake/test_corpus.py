"""The hostile-mail corpus (tests/corpus, made by make_corpus.py) replayed over real SMTP.

Each mail goes through its own session into a real daemon; the reply and the journal row it
made must be what the manifest says: the order's fields, or a refusal naming the reason. A
non-order mail's secret appears nowhere in the journal's files.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from support.paths import CORPUS
from wodmail.dev.standins.mail_clients import converse
from wodmail.intake import handler as intake
from wodmail.journal.jobs import JobState
from wodmail.journal.store import JournalReader

MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
ALLOWED = ["wod@example.org", "portal@example.org"]


def test_the_corpus_is_large_enough():
    assert len(MANIFEST) >= 300
    assert len(list((CORPUS / "mails").glob("*.eml"))) == len(MANIFEST)


def _stuffed(data: bytes) -> bytes:
    return b"\n".join(b"." + line if line.startswith(b".") else line
                      for line in data.split(b"\n"))


def session_bytes(entry: dict[str, Any], data: bytes) -> bytes:
    style, mail_from = entry["style"], entry["mail_from"].encode()
    commands = [b"HELO corpus.example.org", b"MAIL FROM:" + mail_from, b"RCPT TO:<w@backend>",
                b"DATA"]
    if style == "lf":
        return b"\n".join(commands) + b"\n" + _stuffed(data) + b".\nQUIT\n"
    if style == "crlf":
        body = _stuffed(data).replace(b"\n", b"\r\n")
        return b"\r\n".join(commands) + b"\r\n" + body + b".\r\nQUIT\r\n"
    return b"\r\n".join(commands) + b"\r\n" + data + b".\r\nQUIT\r\n"  # raw


def _data_reply(transcript: bytes) -> str:
    replies = [line for line in transcript.decode("utf-8", "replace").split("\r\n")
               if re.match(r"(250 2\.0\.0|55\d) ", line)]
    return replies[-1] if replies else f"no reply to DATA in {transcript[-300:]!r}"


def check(entry: dict[str, Any], reply: str, row: Any, raw: bytes) -> str | None:
    """What is wrong with this mail's outcome, or None."""
    if row is None:
        return f"no journal row; reply {reply!r}"
    if entry["expect"] == "accepted":
        if not reply.startswith("250 2.0.0 OK job") or row.state is JobState.REJECTED:
            return f"expected accepted, got {reply!r} / {row.state}: {row.reason}"
        for key, value in entry["fields"].items():
            if getattr(row, key) != value:
                return f"{key} is {getattr(row, key)!r}, expected {value!r}"
        return None
    if row.state is not JobState.REJECTED or not reply.startswith("55"):
        return f"expected refused ({entry['reason']!r}), got {reply!r} / {row.state}"
    if entry["reason"] not in (row.reason or "") or entry["reason"] not in reply:
        return f"reason {row.reason!r} does not name {entry['reason']!r}"
    if entry.get("secret") and entry["secret"].encode() in raw:
        return "a non-order mail's body was stored"
    return None


@pytest.mark.parametrize("style", ["lf", "crlf", "raw"])
async def test_corpus_replayed_over_smtp(style, make_config, start_daemon, monkeypatch):
    import asyncio

    # The corpus sends hundreds of refusals from one client on purpose: record them all.
    monkeypatch.setattr(intake, "REFUSALS_RECORDED_AT_ONCE", 100_000)
    config = make_config(allowed_senders=ALLOWED)
    daemon = await start_daemon(config)
    reader = JournalReader(config.journal_path())
    problems, replayed, last_id = [], 0, 0
    for entry in (e for e in MANIFEST if e["style"] == style):
        data = (CORPUS / "mails" / entry["file"]).read_bytes()
        session = session_bytes(entry, data)
        transcript = await asyncio.to_thread(converse, "127.0.0.1", daemon.port, session)
        reply = _data_reply(transcript)
        rows = reader.list_jobs(limit=1)
        row = rows[0] if rows and rows[0].id > last_id else None
        last_id = row.id if row else last_id
        raw = (reader.raw(row.id) or b"") if row else b""
        problem = check(entry, reply, row, raw)
        if problem:
            problems.append(f"{entry['file']}: {problem}")
        replayed += 1
    assert replayed > 0
    assert not problems, "\n".join(problems)
    secrets = [e["secret"].encode() for e in MANIFEST if e.get("secret") and e["style"] == style]
    for path in config.state_dir.iterdir():
        if path.is_file():
            content = path.read_bytes()
            assert not [s for s in secrets if s in content], f"a secret is in {path}"
