"""The appliance target (WODRTARGET) as the procmail API computed it."""

from __future__ import annotations

from typing import Any

import pytest

from wodmail.errors import ConfigurationError
from wodmail.lifecycle.appliance import appliance_target

VARIABLES = {
    "IP-WKSHP-Docker101": "10.1.2.100",
    "IP-WKSHP-Spark101": "x.y.z.t",
    "IP-WKSHP-ML101": "10.1.2.250",
    "IP-WKSHP-Bad": "10.1.2",
}


def target(
    *,
    multi: bool = False,
    mono: bool = False,
    content: str = "WKSHP-Docker101",
    student: int = 5,
    range_min: int | None = 1,
    variables: Any = None,
) -> str | None:
    return appliance_target(
        multiappliance=multi,
        monoappliance=mono,
        content=content,
        student=student,
        range_min=range_min,
        lookup=(variables or VARIABLES).__getitem__,
    )


@pytest.mark.parametrize(
    ("student", "expected"), [(1, "10.1.2.100"), (5, "10.1.2.104"), (20, "10.1.2.119")]
)
def test_multiappliance_adds_the_offset_in_the_range_to_the_last_octet(
    student: int, expected: str
) -> None:
    assert target(multi=True, student=student, range_min=1) == expected


def test_monoappliance_is_the_base_ip_for_every_student() -> None:
    assert target(mono=True, student=1) == "10.1.2.100"
    assert target(mono=True, student=17) == "10.1.2.100"


def test_no_appliance_flag_gives_no_target_and_needs_no_key() -> None:
    assert target(content="WKSHP-Unknown") is None


def test_placeholder_base_ip_is_a_configuration_error_naming_the_key() -> None:
    with pytest.raises(ConfigurationError, match="IP-WKSHP-Spark101 is still the placeholder"):
        target(mono=True, content="WKSHP-Spark101")


def test_missing_key_is_a_configuration_error_naming_the_key() -> None:
    with pytest.raises(ConfigurationError, match="IP-WKSHP-Nope is not set"):
        target(multi=True, content="WKSHP-Nope")


def test_not_an_ipv4_address() -> None:
    with pytest.raises(ConfigurationError, match="IP-WKSHP-Bad = '10.1.2' is not an IPv4"):
        target(mono=True, content="WKSHP-Bad")


def test_last_octet_overflow_past_254() -> None:
    assert target(multi=True, content="WKSHP-ML101", student=5, range_min=1) == "10.1.2.254"
    with pytest.raises(ConfigurationError, match=r"IP-WKSHP-ML101 = 10\.1\.2\.250.*255"):
        target(multi=True, content="WKSHP-ML101", student=6, range_min=1)


def test_multiappliance_needs_a_range_and_a_student_inside_it() -> None:
    with pytest.raises(ConfigurationError, match="no student range"):
        target(multi=True, range_min=None)
    with pytest.raises(ConfigurationError, match="student3 is below the range"):
        target(multi=True, student=3, range_min=4)
