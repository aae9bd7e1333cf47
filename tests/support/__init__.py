"""Helpers shared by the tests; fixture plugins are registered in tests/conftest.py."""
