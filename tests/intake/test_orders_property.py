"""Property tests of the order parser.

1. No bytes make parse_order raise, and every rejection reason is one printable ASCII line
   (it becomes the text of an SMTP reply).
2. The portal's burst form and the same order sent by smtplib parse to the same order.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from wodmail.intake.parse import parse_order
from wodmail.orders import CUSTOMER_ID_MAX, Order, OrderRules, Rejection, Verb

RULES = OrderRules(student_min=1, student_max=40, workshop_exists=lambda c: c != "WKSHP-Nope")
FAST = settings(max_examples=300, deadline=None)

# --- fragments of real mails, for building messy ones ------------------------------------

SUBJECT_FRAGMENTS = [
    "CREATE 401 825 jane@example.com",
    "CLEANUP 4 825",
    "CLEANUP  4\t825 ",
    "PURGE 40 1",
    "RESET 1,6 825",
    "RESET 6,1 825",
    "PURGE [object Promise] 825",
    "CREATE [object Promise] 825",
    "CREATE 12 0",
    "CREATE 12 WKSHP-API101",
    "create 3 4",
    "Re: CREATE 3 4",
    "=?utf-8?B?Q0xFQU5VUCA0MDEgODI1?=",
    "=?x-unknown?Q?PURGE_3_4?=",
    "=?utf-8?q?broken",
    "RESET 1,,6 825",
    "PURGE 99999999999999999999999999999999999999 825",
    "CLEANUP 3 " + "9" * 5000,
    "",
]
BODY_FRAGMENTS = [
    "WKSHP-API101",
    "CHLG-K8S101",
    "WKSHP-Nope",
    "WKSHP-../../etc/passwd",
    "Hello team,",
    "-- ",
    "Note: 10:00",
    "<p>WKSHP-API101</p>",
    "V0tTSFAtQVBJMTAxDQo=",
    "WKSHP-Data=\r\n-Fabric101",
    "\ufeffWKSHP-API101",
    "Grüße",
    "--XYZ",
    "--XYZ--",
    "",
]
HEADER_FRAGMENTS = [
    "From: WoD <wod@example.org>",
    "From: <<<@>>>",
    "Message-ID: <abc@example.org>",
    "Message-ID:",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=iso-8859-1",
    "Content-Type: text/plain; charset=x-klingon",
    "Content-Type: text/plain; charset=utf-16",
    "Content-Type: text/html",
    'Content-Type: multipart/alternative; boundary="XYZ"',
    "Content-Type: multipart/mixed",
    "Content-Type: message/rfc822",
    "Content-Transfer-Encoding: base64",
    "Content-Transfer-Encoding: quoted-printable",
    "Content-Transfer-Encoding: x-uuencode",
    "Content-Disposition: attachment",
    " folded continuation",
    "\tfolded continuation",
    "X-Weird: \x00\x7f",
]
# Mostly the two real endings; now and then a bare CR or a stray CR (a blank line).
LINE_ENDINGS = st.sampled_from(["\n"] * 4 + ["\r\n"] * 4 + ["\r", "\r\r\n"])


@st.composite
def messy_mails(draw: st.DrawFn) -> bytes:
    """Mails put together from real-world pieces, with random endings, charsets and junk."""
    real = draw(st.integers(0, 3)) > 0  # mostly real subjects, so bodies get read too
    subject = draw(st.sampled_from(SUBJECT_FRAGMENTS) if real else st.text(max_size=40))
    headers = draw(st.lists(st.sampled_from(HEADER_FRAGMENTS), max_size=6))
    headers.insert(draw(st.integers(0, len(headers))), "Subject: " + subject)
    body = draw(st.lists(st.sampled_from(BODY_FRAGMENTS) | st.text(max_size=30), max_size=6))
    separator = draw(st.sampled_from([[], [""], ["", ""]]))
    head_encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    body_encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]))
    out = bytearray()
    for line in headers:
        out += line.encode(head_encoding, errors="replace") + draw(LINE_ENDINGS).encode()
    for line in [*separator, *body]:
        out += line.encode(body_encoding, errors="replace") + draw(LINE_ENDINGS).encode()
    if draw(st.booleans()):
        junk = draw(st.binary(max_size=20))
        at = draw(st.integers(0, len(out)))
        out[at:at] = junk
    return bytes(out)


def assert_well_formed(result: Order | Rejection) -> None:
    if isinstance(result, Rejection):
        assert result.reason
        assert result.reason.isascii() and result.reason.isprintable(), result.reason
    else:
        assert isinstance(result, Order)
        assert result.student is None or RULES.student_min <= result.student <= 40


@FAST
@given(st.binary(max_size=2000))
def test_no_bytes_make_it_raise(data: bytes) -> None:
    assert_well_formed(parse_order(data, RULES))


@FAST
@given(messy_mails())
def test_no_messy_mail_makes_it_raise(data: bytes) -> None:
    assert_well_formed(parse_order(data, RULES))


# --- round trip: portal burst form == smtplib form ----------------------------------------

WORKSHOPS = st.from_regex(r"\A(WKSHP|CHLG)-[A-Za-z0-9][A-Za-z0-9._-]{0,30}\Z").filter(
    lambda name: ".." not in name and name not in ("WKSHP-Nope", "CHLG-Nope")
)
STUDENTS = st.integers(RULES.student_min, RULES.student_max)


@st.composite
def order_subjects(draw: st.DrawFn) -> tuple[str, str]:
    """A valid subject and the workshop it is about (in the subject or for the body)."""
    verb = draw(st.sampled_from(list(Verb)))
    workshop = draw(WORKSHOPS)
    customer = draw(st.integers(0, CUSTOMER_ID_MAX))
    choices = ["single"]
    if verb is Verb.RESET:
        choices.append("range")
    if verb is not Verb.CREATE and customer:
        choices.append("promise")
    kind = draw(st.sampled_from(choices))
    if kind == "range":
        low = draw(STUDENTS)
        student = f"{low},{draw(st.integers(low, RULES.student_max))}"
    elif kind == "promise":
        student = "[object Promise]"
    else:
        student = str(draw(STUDENTS))
    compact = kind != "promise" and draw(st.booleans())
    words = [verb.value, student, workshop if compact else str(customer)]
    if draw(st.booleans()):
        words.append(draw(st.emails()))
    return " ".join(words), workshop


def smtplib_bytes(subject: str, body: str, cte: str) -> bytes:
    message = EmailMessage()
    message["From"] = "WoD portal <wodportal@example.org>"
    message["To"] = "wodadmin@backend.example.org"
    message["Date"] = formatdate(0)
    message["Message-ID"] = "<order@api.example.org>"
    message["Subject"] = subject
    message.set_content(body, cte=cte)
    return message.as_bytes(policy=SMTP)


@FAST
@given(order_subjects(), st.sampled_from(["7bit", "quoted-printable", "base64"]))
def test_portal_burst_and_smtplib_give_the_same_order(
    subject_and_workshop: tuple[str, str], cte: str
) -> None:
    subject, workshop = subject_and_workshop
    burst = parse_order(f"Subject: {subject}\n{workshop}\n".encode(), RULES)
    mail = parse_order(smtplib_bytes(subject, workshop + "\n", cte), RULES)
    assert isinstance(burst, Order), burst
    assert isinstance(mail, Order), mail
    assert (mail.message_id, mail.sender) == ("order@api.example.org", "wodportal@example.org")
    ignored = {"message_id", "sender"}
    assert burst.model_dump(exclude=ignored) == mail.model_dump(exclude=ignored)
    assert burst.dedup_key() == mail.dedup_key()
    assert burst.workshop == workshop


# --- the fast path for non-MIME mails reads them as the email package would ---------------


@FAST
@given(messy_mails())
@example(b"Subject: \x1f\n")  # str.strip() ate U+001F, the email package keeps it
def test_plain_mails_read_the_same_with_or_without_the_email_package(data: bytes) -> None:
    # A MIME-Version header alone changes nothing a reader sees, but sends the mail through
    # the email package: both ways must give the same order or the same refusal. (A mail
    # starting with a folded line would fold into the added header: not the same mail.)
    assume(not data[:1].isspace())
    direct = parse_order(data, RULES)
    through_mime = parse_order(b"MIME-Version: 1.0\n" + data, RULES)
    if isinstance(direct, Order):
        assert through_mime == direct
    else:
        assert isinstance(through_mime, Rejection)
        assert through_mime.reason == direct.reason
