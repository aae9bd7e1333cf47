"""Secrets never reach the logs: by key, and by value wherever they appear."""

from __future__ import annotations

import io
import json

import structlog

from wodmail import logs


def log_line(**event) -> dict:
    stream = io.StringIO()
    logs.configure_logging(stream=stream)
    structlog.get_logger("t").info("e", **event)
    return json.loads(stream.getvalue())


def test_secret_keys_are_masked():
    line = log_line(password="hunter22", token="abc123", user="student1")
    assert (line["password"], line["token"], line["user"]) == ("***", "***", "student1")


def test_registered_values_are_scrubbed_anywhere():
    logs.register_secret("Pw-in-a-message-42")
    line = log_line(detail="chpasswd said Pw-in-a-message-42 is weak",
                    nested={"x": ["Pw-in-a-message-42"]})
    assert line["detail"] == "chpasswd said *** is weak"
    assert line["nested"] == {"x": ["***"]}


def test_only_recent_student_passwords_are_kept_but_configured_ones_stay():
    logs.register_secret("portal-password-xyz", permanent=True)
    for n in range(logs.RECENT_SECRETS + 5):
        logs.register_secret(f"student-pw-{n:05d}")
    line = log_line(a="student-pw-00000", b=f"student-pw-{logs.RECENT_SECRETS + 4:05d}",
                    c="portal-password-xyz")
    assert line["a"] == "student-pw-00000"  # long gone: its order finished long ago
    assert (line["b"], line["c"]) == ("***", "***")


def test_a_secret_registered_after_the_pattern_was_compiled_is_scrubbed():
    logs.register_secret("first-secret-aaaa")
    assert log_line(a="first-secret-aaaa")["a"] == "***"  # compiles the pattern
    logs.register_secret("later-secret-bbbb")  # pending: not in the compiled pattern
    line = log_line(a="x later-secret-bbbb y", b="first-secret-aaaa")
    assert (line["a"], line["b"]) == ("x *** y", "***")


def test_an_evicted_secret_in_the_compiled_pattern_hides_no_live_one(monkeypatch):
    monkeypatch.setattr(logs, "PENDING_SECRETS", 10 * logs.RECENT_SECRETS)  # no recompile
    logs.register_secret("outer-INNER-SECRET-outer")
    logs.register_secret("INNER-SECRET", permanent=True)
    assert log_line(a="INNER-SECRET")["a"] == "***"  # compiles a pattern holding both
    for n in range(logs.RECENT_SECRETS):  # evicts the outer one; the pattern still has it
        logs.register_secret(f"filler-pw-{n:05d}")
    line = log_line(a="outer-INNER-SECRET-outer", b="filler-pw-00007")
    assert (line["a"], line["b"]) == ("outer-***-outer", "***")
