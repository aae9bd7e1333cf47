"""Orders: what the journal, the dispatcher and the lifecycle know of one accepted mail.

`Order` is one validated order (verb, student or RESET range, customer, workshop);
`Rejection` is a mail that is not one, with its reason. `wodmail.intake.parse` makes them
from a mail's bytes; everything after the intake only reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, model_validator

__all__ = [
    "CUSTOMER_ID_MAX",
    "Mode",
    "Order",
    "OrderRules",
    "Rejection",
    "StudentSpan",
    "Verb",
    "content_of",
    "is_workshop_name",
    "shown",
]

# Customer ids are API-DB primary keys (a SQL INTEGER); anything bigger is not a customer.
CUSTOMER_ID_MAX = 2_147_483_647

_SHOWN_MAX = 60  # characters of mail text quoted in a reason
_WORKSHOP = re.compile(r"(WKSHP|CHLG)-[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Verb(StrEnum):
    CREATE = "CREATE"
    CLEANUP = "CLEANUP"
    RESET = "RESET"
    PURGE = "PURGE"


class Mode(StrEnum):
    WKSHP = "WKSHP"
    CHLG = "CHLG"


def is_workshop_name(name: str) -> bool:
    """True when `name` is a safe workshop folder name (`WKSHP-x` or `CHLG-x`)."""
    return _WORKSHOP.fullmatch(name) is not None and ".." not in name


def content_of(workshop: str) -> tuple[str, Mode]:
    """The content folder and mode of a workshop name: CHLG-x uses the content of WKSHP-x."""
    if workshop.startswith("CHLG-"):
        return "WKSHP-" + workshop.removeprefix("CHLG-"), Mode.CHLG
    return workshop, Mode.WKSHP


class StudentSpan(BaseModel):
    """The student(s) an order touches: one, a RESET range, or not known yet."""

    student: int | None = None  # None = "[object Promise]": resolve from the customer later
    student_max: int | None = None  # only for a RESET range: students student..student_max

    @property
    def students(self) -> list[int]:
        """Every student the order touches; [] when the student is still unknown."""
        if self.student is None:
            return []
        return list(range(self.student, (self.student_max or self.student) + 1))

    @property
    def student_field(self) -> int | list[int] | None:
        """The student as `wodmail jobs` prints it: N, [MIN, MAX], or None when unknown."""
        if self.student_max is not None and self.student is not None:
            return [self.student, self.student_max]
        return self.student


class Order(StudentSpan, frozen=True):
    """One accepted order: what to do, for which student(s), customer and workshop."""

    verb: Verb
    student: int | None  # None = "[object Promise]": resolve from the customer later
    student_max: int | None = None  # only for a RESET range: students student..student_max
    customer: int  # 0 = admin test, no participant
    email: str | None = None  # informational
    workshop: str  # as ordered: WKSHP-x or CHLG-x
    content: str  # the content folder: CHLG-x mapped to WKSHP-x
    mode: Mode
    message_id: str | None = None  # Message-ID without <>
    sender: str | None = None  # address from the From header

    @model_validator(mode="after")
    def _consistent(self) -> Order:
        if not is_workshop_name(self.workshop):
            raise ValueError(f"not a workshop name: {shown(self.workshop)}")
        if (self.content, self.mode) != content_of(self.workshop):
            raise ValueError(f"workshop {self.workshop} does not use content {self.content}")
        if self.customer < 0:
            raise ValueError("customer id is negative")
        if self.student_max is not None:
            if self.verb is not Verb.RESET:
                raise ValueError("a student range is only allowed for RESET")
            if self.student is None or self.student_max <= self.student:
                raise ValueError("a student range needs MIN < MAX")
        if self.student is None and (self.verb is Verb.CREATE or self.customer == 0):
            raise ValueError("an unknown student needs a customer and a verb other than CREATE")
        return self

    def dedup_key(self) -> str:
        """Same key, same order: verb, student(s), customer and workshop as ordered."""
        if self.student is None:
            who = "?"
        elif self.student_max is None:
            who = str(self.student)
        else:
            who = f"{self.student},{self.student_max}"
        return f"{self.verb} {who} {self.customer} {self.workshop}"


class Rejection(BaseModel, frozen=True):
    """A mail that is not an acceptable order, and why, in words a person understands."""

    reason: str
    subject: str | None = None
    message_id: str | None = None
    sender: str | None = None
    verb: str | None = None  # the verb, when the subject got that far
    student: int | None = None  # the student the subject named, when it got that far
    workshop: str | None = None  # the workshop named, when the mail got that far


@dataclass(frozen=True)
class OrderRules:
    """What an order is checked against: the student range and the known workshops."""

    student_min: int = 1
    student_max: int = 20
    # Given the content folder (WKSHP-x); None = don't check.
    workshop_exists: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        if self.student_min > self.student_max:
            raise ValueError(
                f"student range {self.student_min}..{self.student_max}: min is above max"
            )


def shown(text: str) -> str:
    """Mail text quoted in a reason: repr-escaped, ASCII only, truncated."""
    if len(text) > _SHOWN_MAX:
        return ascii(text[:_SHOWN_MAX]) + "..."
    return ascii(text)
