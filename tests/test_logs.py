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
