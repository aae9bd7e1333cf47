"""The order parser: every subject form of ORDERS.md, as each client sends it, and every
rejection with the exact words a person will read.

The workshop-existence check is a real notebooks tree under tmp_path.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path

import pytest
from pydantic import ValidationError

from wodmail.intake.parse import parse_order
from wodmail.orders import Mode, Order, OrderRules, Rejection, Verb, content_of, is_workshop_name

KNOWN_WORKSHOPS = ["WKSHP-API101", "WKSHP-K8S101", "WKSHP-OneView", "WKSHP-Data-Fabric101"]


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    for name in KNOWN_WORKSHOPS:
        (tmp_path / name).mkdir()
    return tmp_path


@pytest.fixture
def rules(notebooks: Path) -> OrderRules:
    """USERMIN..USERMAX wide enough for the portal's real ids (401)."""
    return OrderRules(
        student_min=1,
        student_max=500,
        workshop_exists=lambda content: (notebooks / content).is_dir(),
    )


@pytest.fixture
def default_rules(notebooks: Path) -> OrderRules:
    """The stock range 1..20."""
    return OrderRules(workshop_exists=lambda content: (notebooks / content).is_dir())


def order(data: bytes, rules: OrderRules) -> Order:
    result = parse_order(data, rules)
    assert isinstance(result, Order), result
    return result


def reason(data: bytes, rules: OrderRules) -> str:
    result = parse_order(data, rules)
    assert isinstance(result, Rejection), result
    return result.reason


def smtplib_mail(subject: str, body: str, *, cte: str | None = None) -> bytes:
    """The bytes smtplib's send_message puts after DATA (before dot-stuffing)."""
    message = EmailMessage()
    message["From"] = "WoD portal <wodportal@example.org>"
    message["To"] = "wodadmin@backend.example.org"
    message["Date"] = formatdate(0)
    message["Message-ID"] = "<order-1@api.example.org>"
    message["Subject"] = subject
    if cte:
        message.set_content(body, cte=cte)
    else:
        message.set_content(body)
    return message.as_bytes(policy=SMTP)


# --- 1. the portal: bare LF, no blank line between Subject and body -----------------------


@pytest.mark.parametrize(
    ("data", "verb", "student", "student_max", "customer", "email", "workshop"),
    [
        (
            b"Subject: CREATE 401 825 jane@example.com\nWKSHP-API101\n",
            Verb.CREATE, 401, None, 825, "jane@example.com", "WKSHP-API101",
        ),
        (b"Subject: CLEANUP 401 825\nWKSHP-API101\n", Verb.CLEANUP, 401, None, 825, None,
         "WKSHP-API101"),
        (b"Subject: RESET 401 825\nWKSHP-K8S101\n", Verb.RESET, 401, None, 825, None,
         "WKSHP-K8S101"),
        (b"Subject: RESET 1,6 825\nWKSHP-OneView\n", Verb.RESET, 1, 6, 825, None,
         "WKSHP-OneView"),
        (b"Subject: PURGE 401 825\nWKSHP-API101\n", Verb.PURGE, 401, None, 825, None,
         "WKSHP-API101"),
    ],
)  # fmt: skip
def test_portal_burst_forms(
    rules: OrderRules,
    data: bytes,
    verb: Verb,
    student: int,
    student_max: int | None,
    customer: int,
    email: str | None,
    workshop: str,
) -> None:
    got = order(data, rules)
    assert (got.verb, got.student, got.student_max, got.customer, got.email) == (
        verb, student, student_max, customer, email,
    )  # fmt: skip
    assert (got.workshop, got.content, got.mode) == (workshop, workshop, Mode.WKSHP)
    assert got.message_id is None and got.sender is None


def test_portal_range_lists_every_student(rules: OrderRules) -> None:
    got = order(b"Subject: RESET 1,6 825\nWKSHP-OneView\n", rules)
    assert got.students == [1, 2, 3, 4, 5, 6]
    assert got.student_field == [1, 6]
    assert got.dedup_key() == "RESET 1,6 825 WKSHP-OneView"


def test_portal_burst_with_crlf_and_mixed_endings(rules: OrderRules) -> None:
    crlf = b"Subject: CLEANUP 401 825\r\nWKSHP-API101\r\n"
    mixed = b"Subject: CLEANUP 401 825\r\nWKSHP-API101\n"
    bare_cr = b"Subject: CLEANUP 401 825\rWKSHP-API101\r"
    expected = order(b"Subject: CLEANUP 401 825\nWKSHP-API101\n", rules)
    for data in (crlf, mixed, bare_cr):
        assert order(data, rules) == expected


def test_extra_whitespace_in_subject_is_tolerated(rules: OrderRules) -> None:
    got = order(b"Subject:   RESET\t 1 ,  6   825  \nWKSHP-OneView\n", rules)
    assert (got.verb, got.student, got.student_max, got.customer) == (Verb.RESET, 1, 6, 825)


# --- 2. the admin test tool: netcat, bare LF, blank line --------------------------------


def test_admin_netcat_form_is_an_admin_test(rules: OrderRules) -> None:
    got = order(b"Subject: CREATE 121 0\n\nWKSHP-API101\n", rules)
    assert (got.verb, got.student, got.customer, got.workshop) == (
        Verb.CREATE, 121, 0, "WKSHP-API101",
    )  # fmt: skip


def test_compact_form_needs_no_body(rules: OrderRules) -> None:
    got = order(b"Subject: CREATE 121 WKSHP-API101\n", rules)
    assert (got.verb, got.student, got.customer, got.workshop) == (
        Verb.CREATE, 121, 0, "WKSHP-API101",
    )  # fmt: skip


def test_compact_form_subject_wins_over_body(rules: OrderRules) -> None:
    other_workshop = order(b"Subject: CLEANUP 121 WKSHP-API101\n\nWKSHP-K8S101\n", rules)
    a_greeting = order(b"Subject: CLEANUP 121 WKSHP-API101\n\nHello team,\n", rules)
    assert other_workshop.workshop == a_greeting.workshop == "WKSHP-API101"


# --- 3. ordinary mail software: CRLF, full headers, MIME --------------------------------

SMTPLIB_LITERAL = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"From: WoD portal <wodportal@example.org>\r\n"
    b"To: wodadmin@backend.example.org\r\n"
    b"Date: Thu, 01 Jan 1970 00:00:00 -0000\r\n"
    b"Message-ID: <order-1@api.example.org>\r\n"
    b"Subject: CREATE 401 825 jane@example.com\r\n"
    b"\r\n"
    b"WKSHP-API101\r\n"
)


def test_smtplib_literal_with_full_headers(rules: OrderRules) -> None:
    got = order(SMTPLIB_LITERAL, rules)
    assert (got.verb, got.student, got.customer, got.email, got.workshop) == (
        Verb.CREATE, 401, 825, "jane@example.com", "WKSHP-API101",
    )  # fmt: skip
    assert got.message_id == "order-1@api.example.org"
    assert got.sender == "wodportal@example.org"


def test_smtplib_built_mail_equals_portal_burst(rules: OrderRules) -> None:
    burst = order(b"Subject: CREATE 401 825 jane@example.com\nWKSHP-API101\n", rules)
    mail = order(smtplib_mail("CREATE 401 825 jane@example.com", "WKSHP-API101\n"), rules)
    assert mail.model_copy(update={"message_id": None, "sender": None}) == burst


def test_quoted_printable_body_is_decoded(rules: OrderRules) -> None:
    data = (
        b"From: wodportal@example.org\r\n"
        b"Subject: CLEANUP 401 825\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"WKSHP-Data=\r\n"
        b"-Fabric101=20\r\n"
        b"\r\n"
        b"Gr=C3=BC=C3=9Fe\r\n"
    )
    assert order(data, rules).workshop == "WKSHP-Data-Fabric101"


def test_base64_body_is_decoded(rules: OrderRules) -> None:
    data = (
        b"From: wodportal@example.org\r\n"
        b"Subject: PURGE 401 825\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        + base64.encodebytes(b"\r\n  WKSHP-API101  \r\n\r\nRegards\r\n").replace(b"\n", b"\r\n")
    )
    assert order(data, rules).workshop == "WKSHP-API101"


@pytest.mark.parametrize("cte", ["7bit", "quoted-printable", "base64"])
def test_smtplib_transfer_encodings(rules: OrderRules, cte: str) -> None:
    data = smtplib_mail("RESET 1,6 825", "WKSHP-OneView\n\n-- \nThe WoD team\n", cte=cte)
    got = order(data, rules)
    assert (got.verb, got.student_field, got.workshop) == (Verb.RESET, [1, 6], "WKSHP-OneView")


def test_multipart_alternative_takes_the_text_plain_part(rules: OrderRules) -> None:
    data = (
        b"From: Admin <admin@example.org>\r\n"
        b"Subject: CLEANUP 7 825\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="XYZ"\r\n'
        b"\r\n"
        b"This is a multi-part message in MIME format.\r\n"
        b"--XYZ\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        b"WKSHP-K8S101\r\n"
        b"--XYZ\r\n"
        b"Content-Type: text/html; charset=us-ascii\r\n"
        b"\r\n"
        b"<p>WKSHP-API101</p>\r\n"
        b"--XYZ--\r\n"
    )
    assert order(data, rules).workshop == "WKSHP-K8S101"


def test_html_only_body_is_stripped_of_tags(rules: OrderRules) -> None:
    data = (
        b"Subject: CLEANUP 7 825\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"\r\n"
        b"<html><head><title>order</title><style>p {color: red}</style></head>"
        b"<body><p>&nbsp;</p><p>WKSHP-API101</p><p>Kind regards</p></body></html>\r\n"
    )
    assert order(data, rules).workshop == "WKSHP-API101"


def test_signature_after_the_workshop_is_ignored(rules: OrderRules) -> None:
    data = b"Subject: CLEANUP 7 825\n\nWKSHP-API101\n-- \nJane Doe\nWKSHP-K8S101\n"
    assert order(data, rules).workshop == "WKSHP-API101"


def test_latin1_body_is_read(rules: OrderRules) -> None:
    data = (
        b"Subject: CLEANUP 7 825\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"WKSHP-API101\r\nGr\xfc\xdfe\r\n"
    )
    assert order(data, rules).workshop == "WKSHP-API101"


def test_unknown_charset_falls_back(rules: OrderRules) -> None:
    data = (
        b"Subject: CLEANUP 7 825\r\n"
        b"Content-Type: text/plain; charset=x-klingon\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"\xef\xbb\xbfWKSHP-API101\r\n\xff\xfe junk\r\n"
    )
    assert order(data, rules).workshop == "WKSHP-API101"


def test_rfc2047_subject_is_decoded(rules: OrderRules) -> None:
    data = b"Subject: =?utf-8?B?Q0xFQU5VUCA0MDEgODI1?=\r\n\r\nWKSHP-API101\r\n"
    got = order(data, rules)
    assert (got.verb, got.student, got.customer) == (Verb.CLEANUP, 401, 825)


def test_folded_subject_is_unfolded(rules: OrderRules) -> None:
    data = b"Subject: CREATE 401\r\n 825\r\n\tjane@example.com\r\n\r\nWKSHP-API101\r\n"
    got = order(data, rules)
    assert (got.student, got.customer, got.email) == (401, 825, "jane@example.com")


def test_body_line_that_looks_like_a_header_stays_a_header(rules: OrderRules) -> None:
    """Without a blank line, `Note: x` is a header field; the workshop line after it is not."""
    data = b"Subject: CLEANUP 7 825\nNote: hi\nWKSHP-API101\n"
    assert order(data, rules).workshop == "WKSHP-API101"


def test_message_id_and_sender_are_kept(rules: OrderRules) -> None:
    data = (
        b'From: "Doe, Jane" <Jane.Doe@Example.org>\r\n'
        b"Message-ID:\r\n <  abc.123@host.example  >\r\n"
        b"Subject: CLEANUP 7 825\r\n\r\nWKSHP-API101\r\n"
    )
    got = order(data, rules)
    assert (got.message_id, got.sender) == ("abc.123@host.example", "Jane.Doe@Example.org")


# --- CHLG and [object Promise] ----------------------------------------------------------


def test_challenge_uses_workshop_content(notebooks: Path) -> None:
    asked: list[str] = []

    def exists(content: str) -> bool:
        asked.append(content)
        return (notebooks / content).is_dir()

    got = order(b"Subject: CREATE 3 825 j@x.org\nCHLG-API101\n", OrderRules(workshop_exists=exists))
    assert (got.workshop, got.content, got.mode) == ("CHLG-API101", "WKSHP-API101", Mode.CHLG)
    assert asked == ["WKSHP-API101"]
    assert content_of("WKSHP-API101") == ("WKSHP-API101", Mode.WKSHP)


@pytest.mark.parametrize("verb", [Verb.RESET, Verb.PURGE, Verb.CLEANUP])
def test_object_promise_leaves_the_student_unknown(rules: OrderRules, verb: Verb) -> None:
    got = order(f"Subject: {verb} [object Promise] 825\nWKSHP-API101\n".encode(), rules)
    assert (got.verb, got.student, got.customer) == (verb, None, 825)
    assert got.students == [] and got.student_field is None
    assert got.dedup_key() == f"{verb} ? 825 WKSHP-API101"


def test_object_promise_refused_for_create(rules: OrderRules) -> None:
    data = b"Subject: CREATE [object Promise] 825 jane@example.com\nWKSHP-API101\n"
    assert reason(data, rules) == "CREATE needs a student id, got '[object Promise]'"


@pytest.mark.parametrize(
    "subject", ["PURGE [object Promise] 0", "PURGE [object Promise] WKSHP-API101"]
)
def test_object_promise_refused_without_customer(rules: OrderRules, subject: str) -> None:
    assert reason(f"Subject: {subject}\nWKSHP-API101\n".encode(), rules) == (
        "student id '[object Promise]' cannot be looked up without a customer id"
    )


# --- the Order record -------------------------------------------------------------------


def test_same_order_same_key(rules: OrderRules) -> None:
    single = order(b"Subject: RESET 5 825\nWKSHP-OneView\n", rules)
    as_range = order(b"Subject: RESET 5,5 825\nWKSHP-OneView\n", rules)
    assert single.dedup_key() == as_range.dedup_key() == "RESET 5 825 WKSHP-OneView"
    assert as_range.student_field == 5
    burst = order(b"Subject: CREATE 4 825 a@x.org\nWKSHP-API101\n", rules)
    smtp = order(smtplib_mail("CREATE 4 825 b@y.org", "WKSHP-API101\n"), rules)
    assert burst.dedup_key() == smtp.dedup_key()
    other = order(b"Subject: CREATE 4 826 a@x.org\nWKSHP-API101\n", rules)
    assert other.dedup_key() != burst.dedup_key()


def test_order_refuses_inconsistent_construction() -> None:
    base = {"customer": 1, "workshop": "WKSHP-A", "content": "WKSHP-A", "mode": Mode.WKSHP}
    with pytest.raises(ValidationError, match="only allowed for RESET"):
        Order(verb=Verb.PURGE, student=1, student_max=3, **base)
    with pytest.raises(ValidationError, match="unknown student"):
        Order(verb=Verb.CREATE, student=None, **base)
    with pytest.raises(ValidationError, match="does not use content"):
        Order(verb=Verb.PURGE, student=1, **{**base, "workshop": "CHLG-A"})
    with pytest.raises(ValidationError, match="not a workshop name"):
        Order(verb=Verb.PURGE, student=1, **{**base, "workshop": "WKSHP-../etc"})


def test_rules_refuse_an_empty_range() -> None:
    with pytest.raises(ValueError, match="min is above max"):
        OrderRules(student_min=5, student_max=1)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("WKSHP-API101", True),
        ("CHLG-Data-Fabric101", True),
        ("WKSHP-a.b_c", True),
        ("WKSHP-", False),
        ("WKSHP-../x", False),
        ("WKSHP-a..b", False),
        ("WKSHP-a/b", False),
        ("WKSHP-a b", False),
        ("WKSHP-a;rm", False),
        ("WKSHP-$(id)", False),
        ("wkshp-api101", False),
        ("WKSHP-" + "a" * 65, False),
    ],
)
def test_workshop_names(name: str, ok: bool) -> None:
    assert is_workshop_name(name) is ok


# --- every rejection, word for word -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"Subject: CREATE 42 825 jane@example.com\nWKSHP-API101\n", "student 42 outside 1..20"),
        (b"Subject: CLEANUP 0 825\nWKSHP-API101\n", "student 0 outside 1..20"),
        (b"Subject: CLEANUP -3 825\nWKSHP-API101\n", "student -3 outside 1..20"),
        (
            b"Subject: CLEANUP 123456789012345678901234567890123 825\nWKSHP-API101\n",
            "student 12345678901234567890... outside 1..20",
        ),
        (b"Subject: CLEANUP abc 825\nWKSHP-API101\n", "student id 'abc' is not a number"),
        (b"Subject: CLEANUP abc xyz\nWKSHP-API101\n", "student id 'abc' is not a number"),
        (
            b"Subject: PURGE 5 [object Promise]\nWKSHP-API101\n",
            "customer id '[object Promise]' is not a number",
        ),
        (b"Subject: CREATE 1,6 825\nWKSHP-API101\n", "a student range is only allowed for RESET"),
        (b"Subject: PURGE 1,6 825\nWKSHP-API101\n", "a student range is only allowed for RESET"),
        (b"Subject: RESET 6,1 825\nWKSHP-OneView\n", "range 6,1: MIN is greater than MAX"),
        (b"Subject: RESET 1,42 825\nWKSHP-OneView\n", "range 1,42: student 42 outside 1..20"),
        (b"Subject: RESET 0,5 825\nWKSHP-OneView\n", "range 0,5: student 0 outside 1..20"),
        (
            b"Subject: RESET 1,2,3 825\nWKSHP-OneView\n",
            "student range '1,2,3' is not of the form MIN,MAX",
        ),
        (b"Subject: CLEANUP 5 abc\nWKSHP-API101\n", "customer id 'abc' is not a number"),
        (b"Subject: CLEANUP 5 -825\nWKSHP-API101\n", "customer id -825 is negative"),
        (
            b"Subject: CLEANUP 5 99999999999\nWKSHP-API101\n",
            "customer id 99999999999 is too large (max 2147483647)",
        ),
        (b"Subject: CLEANUP\nWKSHP-API101\n", "subject 'CLEANUP' has no student id"),
        (b"Subject: CLEANUP 5\nWKSHP-API101\n", "subject 'CLEANUP 5' has no customer id"),
        (
            b"Subject: CLEANUP 5 825 jane@example.com extra words\nWKSHP-API101\n",
            "unexpected text at the end of the subject: 'jane@example.com extra words'",
        ),
        (b"Subject: CLEANUP 5 825\n", "no workshop named in the body"),
        (b"Subject: CLEANUP 5 825\n\n\n   \n", "no workshop named in the body"),
        (b"Subject: CLEANUP 5 825\n\n-- \nWKSHP-API101\n", "no workshop named in the body"),
        (
            b"Subject: CLEANUP 5 825\nContent-Type: application/json\n\n{}\n",
            "no workshop named in the body: the mail has no text part",
        ),
        (b"Subject: CLEANUP 5 825\n\nHello,\nWKSHP-API101\n", "not a workshop name: 'Hello,'"),
        (b"Subject: CLEANUP 5 825\n\nWKSHP-../../etc\n", "not a workshop name: 'WKSHP-../../etc'"),
        (b"Subject: CLEANUP 5 825\n\nWKSHP-A;reboot\n", "not a workshop name: 'WKSHP-A;reboot'"),
        (
            b"Subject: CLEANUP 5 825\n\nWKSHP-" + b"x" * 100 + b"\n",
            "not a workshop name: 'WKSHP-" + "x" * 54 + "'...",
        ),
        (b"Subject: CLEANUP 5 WKSHP-a/b\n", "not a workshop name: 'WKSHP-a/b'"),
        (b"Subject: CLEANUP 5 825\n\nWKSHP-Nope\n", "unknown workshop WKSHP-Nope"),
        (
            b"Subject: CLEANUP 5 825\n\nCHLG-Nope\n",
            "unknown workshop CHLG-Nope (no content WKSHP-Nope)",
        ),
        (b"From: a@b\nTo: c@d\n\nWKSHP-API101\n", "no Subject header"),
        (b"", "no Subject header"),
        (b"WKSHP-API101\nSubject: CREATE 1 2\n", "no Subject header"),
        (b"Subject:   \n\nWKSHP-API101\n", "not an order: the subject is empty"),
        (
            b"Subject: Re: CREATE 5 825\n\nWKSHP-API101\n",
            "not an order: subject 'Re: CREATE 5 825' does not start with"
            " CREATE, CLEANUP, RESET or PURGE",
        ),
        (
            b"Subject: create 5 825\n\nWKSHP-API101\n",
            "not an order: subject 'create 5 825' does not start with"
            " CREATE, CLEANUP, RESET or PURGE (verbs are upper case)",
        ),
        (
            "Subject: Grüße\r\n\r\nx\r\n".encode(),
            "not an order: subject 'Gr\\xfc\\xdfe' does not start with"
            " CREATE, CLEANUP, RESET or PURGE",
        ),
    ],
)
def test_rejection_reasons(default_rules: OrderRules, data: bytes, expected: str) -> None:
    assert reason(data, default_rules) == expected


def test_rejection_keeps_what_was_read(default_rules: OrderRules) -> None:
    data = (
        b"From: WoD <wod@example.org>\r\nMessage-ID: <m1@example.org>\r\n"
        b"Subject: CREATE 42 825 jane@example.com\r\n\r\nWKSHP-API101\r\n"
    )
    assert parse_order(data, default_rules) == Rejection(
        reason="student 42 outside 1..20",
        subject="CREATE 42 825 jane@example.com",
        message_id="m1@example.org",
        sender="wod@example.org",
        verb="CREATE",
        student=42,  # out of range, but what the subject said: `jobs --student 42` finds it
        workshop="WKSHP-API101",
    )


def test_rejection_keeps_the_workshop_it_read(default_rules: OrderRules) -> None:
    rules = OrderRules(workshop_exists=lambda content: False)
    data = b"From: <wod@example.org>\nSubject: CREATE 7 0\n\nWKSHP-Nope101\n"
    refused = parse_order(data, rules)
    assert isinstance(refused, Rejection)
    assert (refused.student, refused.workshop) == (7, "WKSHP-Nope101")
    assert refused.reason == "unknown workshop WKSHP-Nope101"


def test_rejection_of_a_non_order_names_no_verb(default_rules: OrderRules) -> None:
    result = parse_order(b"Subject: create 5 825\n\nWKSHP-API101\n", default_rules)
    assert isinstance(result, Rejection)
    assert (result.verb, result.subject) == (None, "create 5 825")


def test_failing_workshop_check_is_a_rejection_not_a_crash() -> None:
    def broken(content: str) -> bool:
        raise OSError(f"notebooks tree unreadable at {content}")

    rules = OrderRules(workshop_exists=broken)
    assert reason(b"Subject: CLEANUP 5 825\nWKSHP-API101\n", rules) == (
        "could not check workshop WKSHP-API101: OSError: notebooks tree unreadable at WKSHP-API101"
    )


def test_nothing_escapes_parse_order(default_rules: OrderRules) -> None:
    assert parse_order(None, default_rules) == Rejection(  # type: ignore[arg-type]
        reason="unreadable mail: TypeError: cannot convert 'NoneType' object to bytes"
    )


def test_no_existence_check_when_none_is_given() -> None:
    got = order(b"Subject: CLEANUP 5 825\nWKSHP-Anything\n", OrderRules())
    assert got.workshop == "WKSHP-Anything"
