"""wodmail.host.passwords: random student passwords."""

from __future__ import annotations

import pytest

from wodmail.host.passwords import DEFAULT_ALPHABET, generate_password


def test_default_password_is_16_unambiguous_letters_and_digits() -> None:
    password = generate_password()

    assert len(password) == 16
    assert set(password) <= set(DEFAULT_ALPHABET)
    assert not set("lIO01") & set(DEFAULT_ALPHABET)
    assert set(DEFAULT_ALPHABET) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    )


def test_length_and_alphabet_are_honoured() -> None:
    password = generate_password(40, alphabet="xyz")

    assert len(password) == 40
    assert set(password) <= set("xyz")


def test_passwords_differ_and_use_the_whole_alphabet() -> None:
    passwords = [generate_password() for _ in range(500)]

    assert len(set(passwords)) == len(passwords)
    assert set("".join(passwords)) == set(DEFAULT_ALPHABET)


@pytest.mark.parametrize(
    ("length", "alphabet", "complaint"),
    [
        (0, DEFAULT_ALPHABET, "length must be at least 1"),
        (-3, DEFAULT_ALPHABET, "length must be at least 1"),
        (16, "aaaa", "at least 2 distinct"),
        (16, "", "at least 2 distinct"),
        (16, "ab cd", "blank or control"),
        (16, "ab\ncd", "blank or control"),
    ],
)
def test_bad_length_or_alphabet_is_refused(length: int, alphabet: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        generate_password(length, alphabet)
