"""Where the repository's test data lives, wherever a test module sits under tests/."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
CORPUS = TESTS / "corpus"
