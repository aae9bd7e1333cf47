"""Writes the hostile-mail corpus: tests/corpus/mails/*.eml and tests/corpus/manifest.json.

Run from the repository root: .venv/bin/python tests/corpus/make_corpus.py
The files are committed; this script says how they were made and regenerates them. Each mail
is replayed over real SMTP by tests/test_corpus.py, in the manifest's `style`:

- `lf`: a bare-LF session (as the portal and the admin tool talk), the mail as stored;
- `crlf`: a CRLF session (ordinary mail software), every LF of the mail sent as CRLF;
- `raw`: a CRLF session, the mail's bytes sent exactly as stored (for line-ending attacks).

`expect` is `accepted` with the order's fields, or `refused` with a substring of the reason.
The daemon under test serves students 1..20, allows senders wod@example.org and
portal@example.org (check `both`), knows WKSHP-API101, WKSHP-K8S101 and WKSHP-Docker101,
and takes mails up to 65536 bytes.
"""

from __future__ import annotations

import base64
import json
import quopri
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ALLOWED = "wod@example.org"
WORKSHOPS = ("WKSHP-API101", "WKSHP-K8S101", "WKSHP-Docker101")


@dataclass
class Case:
    slug: str
    mail: bytes
    expect: str  # accepted | refused
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    mail_from: str = f"<{ALLOWED}>"
    styles: tuple[str, ...] = ("lf", "crlf")
    secret: str | None = None  # must not be stored (non-order mail)


class Numbers:
    """Distinct customer ids, so that no accepted order duplicates another."""

    def __init__(self) -> None:
        self.next = 5000

    def customer(self) -> int:
        self.next += 1
        return self.next


def mail(*headers: str, body: str = "WKSHP-API101", blank: bool = True) -> bytes:
    text = "\n".join(headers) + ("\n\n" if blank else "\n") + body + "\n"
    return text.encode("utf-8")


def accepted(slug: str, data: bytes, **fields: Any) -> Case:
    return Case(slug, data, "accepted", fields=fields)


def refused(slug: str, data: bytes, reason: str, **extra: Any) -> Case:
    return Case(slug, data, "refused", reason=reason, **extra)


def orders(n: Numbers) -> Iterator[Case]:
    """Well-formed orders in every shape a client may use (they must all go through)."""
    for index, workshop in enumerate(WORKSHOPS * 4):
        student = index % 20 + 1
        for verb in ("CREATE", "CLEANUP", "RESET", "PURGE"):
            c = n.customer()
            yield accepted(
                f"order-{verb.lower()}-{workshop}-{index}",
                mail(f"Subject: {verb} {student} {c} p{c}@example.com", f"From: {ALLOWED}",
                     body=workshop),
                verb=verb, student=student, customer=c, workshop=workshop,
            )
    c = n.customer()
    yield accepted("portal-no-blank-line", mail(f"Subject: CREATE 3 {c}", blank=False),
                   verb="CREATE", student=3, customer=c, workshop="WKSHP-API101")
    c = n.customer()
    yield accepted("compact-form", mail(f"Subject: CREATE 4 WKSHP-K8S101 x{c}@example.com"),
                   verb="CREATE", student=4, customer=0, workshop="WKSHP-K8S101")
    c = n.customer()
    yield accepted("tab-separated", mail(f"Subject: CLEANUP\t5\t{c}"),
                   verb="CLEANUP", student=5, customer=c)
    c = n.customer()
    yield accepted("promise-cleanup", mail(f"Subject: CLEANUP [object Promise] {c}"),
                   verb="CLEANUP", student=None, customer=c)
    c = n.customer()
    yield accepted("reset-range", mail(f"Subject: RESET 2,7 {c}"), verb="RESET", student=2,
                   customer=c)
    c = n.customer()
    yield accepted("challenge", mail(f"Subject: CREATE 6 {c}", body="CHLG-API101"),
                   verb="CREATE", workshop="CHLG-API101", customer=c)
    c = n.customer()
    yield accepted("signature-after", mail(f"Subject: CREATE 7 {c}",
                                           body="WKSHP-API101\n-- \nThe portal"),
                   customer=c, workshop="WKSHP-API101")
    c = n.customer()
    encoded = base64.b64encode(f"CREATE 8 {c}".encode()).decode()
    yield accepted("encoded-word-subject", mail(f"Subject: =?utf-8?b?{encoded}?="),
                   verb="CREATE", student=8, customer=c)
    c = n.customer()
    yield accepted("display-name-from", mail(f"Subject: CREATE 9 {c}",
                                             f'From: "WoD Portal" <{ALLOWED}>'),
                   customer=c)
    c = n.customer()
    html = (f"Subject: CREATE 10 {c}\nMIME-Version: 1.0\nContent-Type: text/html\n\n"
            "<html><body><p>WKSHP-Docker101</p></body></html>\n")
    yield accepted("html-body", html.encode(), customer=c, workshop="WKSHP-Docker101")
    c = n.customer()
    qp = quopri.encodestring(b"WKSHP-API101\n").decode()
    yield accepted("quoted-printable", (
        f"Subject: CREATE 11 {c}\nMIME-Version: 1.0\nContent-Type: text/plain\n"
        f"Content-Transfer-Encoding: quoted-printable\n\n{qp}").encode(), customer=c)
    c = n.customer()
    b64 = base64.b64encode(b"WKSHP-K8S101\n").decode()
    yield accepted("base64-body", (
        f"Subject: CREATE 12 {c}\nMIME-Version: 1.0\nContent-Type: text/plain\n"
        f"Content-Transfer-Encoding: base64\n\n{b64}\n").encode(), customer=c,
        workshop="WKSHP-K8S101")
    c = n.customer()
    yield accepted("bom-body", mail(f"Subject: CREATE 13 {c}", body="\ufeffWKSHP-API101"),
                   customer=c)
    c = n.customer()
    parts = (f"Subject: CREATE 14 {c}\nMIME-Version: 1.0\n"
             "Content-Type: multipart/alternative; boundary=zz\n\n--zz\n"
             "Content-Type: text/plain\n\nWKSHP-API101\n--zz\nContent-Type: text/html\n\n"
             "<p>WKSHP-K8S101</p>\n--zz--\n")
    yield accepted("multipart-alternative", parts.encode(), customer=c,
                   workshop="WKSHP-API101")
    c = n.customer()
    yield accepted("dot-stuffed-body", mail(f"Subject: CREATE 15 {c}",
                                            body="WKSHP-API101\n.hidden line"),
                   customer=c)


def subjects(n: Numbers) -> Iterator[Case]:
    """Subjects that must be refused, each with the reason a person would need."""
    bad = [
        ("missing-subject", None, "no Subject header"),
        ("empty-subject", "", "the subject is empty"),
        ("lowercase-verb", "create 3 {c}", "verbs are upper case"),
        ("unknown-verb", "DESTROY 3 {c}", "does not start with CREATE"),
        ("no-student", "CREATE", "has no student id"),
        ("no-customer", "CREATE 3", "has no customer id"),
        ("student-word", "CREATE three {c}", "is not a number"),
        ("student-zero", "CREATE 0 {c}", "student 0 outside 1..20"),
        ("student-high", "CREATE 21 {c}", "student 21 outside 1..20"),
        ("student-negative", "CREATE -3 {c}", "student -3 outside 1..20"),
        ("student-huge", "CREATE 99999999999999999999999999999999999 {c}", "outside 1..20"),
        ("customer-negative", "CREATE 3 -{c}", "is negative"),
        ("customer-huge", "CREATE 3 99999999999", "is too large"),
        ("customer-word", "CREATE 3 abc", "is not a number"),
        ("range-not-reset", "CREATE 1,3 {c}", "only allowed for RESET"),
        ("range-reversed", "RESET 7,2 {c}", "MIN is greater than MAX"),
        ("range-outside", "RESET 1,30 {c}", "outside 1..20"),
        ("range-garbage", "RESET 1,,3 {c}", "is not of the form MIN,MAX"),
        ("two-extra-words", "CREATE 3 {c} a@b.c extra", "unexpected text at the end"),
        ("promise-create", "CREATE [object Promise] {c}", "CREATE needs a student id"),
        ("promise-no-customer", "PURGE [object Promise] 0", "cannot be looked up"),
        ("compact-bad-workshop", "CREATE 3 WKSHP-../../etc", "not a workshop name"),
        ("nbsp", "CREATE\u00a03 {c}", "U+00A0 (NO-BREAK SPACE)"),
        ("ideographic-space", "CREATE 3\u3000{c}", "U+3000 (IDEOGRAPHIC SPACE)"),
        ("zero-width-space", "CREATE 3\u200b {c}", "U+200B (ZERO WIDTH SPACE)"),
        ("rtl-override", "CREATE 3 {c} \u202emoc.elpmaxe@a", "U+202E"),
        ("escape-bytes", "CREATE 3 {c} \x1b[2J\x1b]0;owned\x07", "U+001B"),
        ("null-byte", "CREATE 3\x00 {c}", "U+0000"),
        ("backspace", "CREATE 3 {c}\x08\x08", "U+0008"),
        ("vertical-tab", "CREATE\x0b3 {c}", "U+000B"),
        ("form-feed", "CREATE 3\x0c{c}", "U+000C"),
        ("line-separator", "CREATE 3\u2028{c}", "U+2028"),
        ("em-space", "CREATE\u20033 {c}", "U+2003"),
        ("narrow-nbsp", "CREATE 3\u202f{c}", "U+202F"),
        ("fullwidth-digits", "CREATE \uff13 {c}", "is not a number"),
        ("arabic-digits", "CREATE \u0663 {c}", "is not a number"),
        ("long-subject", "CREATE 3 {c} a@b.c " + "x" * 5000, "unexpected text"),
    ]
    for slug, subject, reason in bad:
        c = n.customer()
        headers = [] if subject is None else [f"Subject: {subject.format(c=c)}"]
        headers.append(f"From: {ALLOWED}")
        yield refused(f"subject-{slug}", mail(*headers), reason)
    for slug, encoded, reason in [
        ("encoded-nbsp", "=?utf-8?q?CREATE=C2=A03_{c}?=", "U+00A0"),
        ("encoded-escape", "=?utf-8?q?CREATE_3_{c}_=1B[31m?=", "U+001B"),
        ("encoded-ideographic", "=?utf-8?b?{b}?=", "U+3000"),
    ]:
        c = n.customer()
        b = base64.b64encode(f"CREATE\u30003 {c}".encode()).decode()
        yield refused(f"subject-{slug}", mail(f"Subject: {encoded.format(c=c, b=b)}"), reason)


def headers(n: Numbers) -> Iterator[Case]:
    c = n.customer()
    yield refused("two-subjects", mail(f"Subject: CREATE 3 {c}", f"Subject: PURGE 3 {c}"),
                  "2 Subject headers")
    c = n.customer()
    yield refused("three-subjects", mail(*[f"Subject: CREATE {i} {c}" for i in (1, 2, 3)]),
                  "3 Subject headers")
    c = n.customer()
    yield refused("subject-case-twice", mail(f"Subject: CREATE 3 {c}", f"SUBJECT: CREATE 4 {c}"),
                  "2 Subject headers")
    c = n.customer()
    yield refused("two-froms", mail(f"Subject: CREATE 3 {c}", f"From: {ALLOWED}",
                                    "From: evil@example.net"), "2 From headers")
    c = n.customer()
    yield refused("from-list", mail(f"Subject: CREATE 3 {c}", f"From: {ALLOWED}, x@example.net"),
                  "From header is not one address")
    c = n.customer()
    yield refused("from-two-angles", mail(f"Subject: CREATE 3 {c}",
                                          f"From: <{ALLOWED}> <evil@example.net>"),
                  "more than one address")
    c = n.customer()
    yield refused("from-garbage", mail(f"Subject: CREATE 3 {c}", "From: nobody"),
                  "From header is not one address")
    c = n.customer()
    yield refused("from-display-name-spoof", mail(f"Subject: CREATE 3 {c}",
                                                  f"From: {ALLOWED} <evil@example.net>"),
                  "sender not allowed: evil@example.net (From header)")
    c = n.customer()
    yield refused("from-quoted-spoof", mail(f"Subject: CREATE 3 {c}",
                                            f'From: "{ALLOWED}" <evil@example.net>'),
                  "sender not allowed: evil@example.net (From header)")
    c = n.customer()
    yield refused("from-not-allowed", mail(f"Subject: CREATE 3 {c}", "From: x@example.net"),
                  "sender not allowed: x@example.net (From header)")
    c = n.customer()
    case = refused("null-envelope-forged-from", mail(f"Subject: CREATE 3 {c}", f"From: {ALLOWED}"),
                   "sender not allowed: <> (envelope: the null sender)")
    case.mail_from = "<>"
    yield case
    c = n.customer()
    case = refused("envelope-not-allowed", mail(f"Subject: CREATE 3 {c}", f"From: {ALLOWED}"),
                   "sender not allowed: mallory@example.net (envelope)")
    case.mail_from = "<mallory@example.net>"
    yield case
    c = n.customer()
    case = refused("envelope-lookalike", mail(f"Subject: CREATE 3 {c}"),
                   "sender not allowed: wod@example.org.evil.net (envelope)")
    case.mail_from = f"<{ALLOWED}.evil.net>"
    yield case


def bodies(n: Numbers) -> Iterator[Case]:
    cases = [
        ("empty", "", "no workshop named in the body"),
        ("only-signature", "-- \nbye", "no workshop named in the body"),
        ("traversal", "WKSHP-../../../etc/passwd", "not a workshop name"),
        ("absolute-path", "/etc/passwd", "not a workshop name"),
        ("unknown", "WKSHP-Nope", "unknown workshop WKSHP-Nope"),
        ("unknown-challenge", "CHLG-Nope", "unknown workshop CHLG-Nope"),
        ("lowercase-prefix", "wkshp-API101", "not a workshop name"),
        ("shell", "WKSHP-API101; rm -rf /", "not a workshop name"),
        ("backticks", "WKSHP-`id`", "not a workshop name"),
        ("dollar", "WKSHP-$(id)", "not a workshop name"),
        ("newline-in-name", "WKSHP-\nAPI101", "not a workshop name"),
        ("very-long-name", "WKSHP-" + "A" * 300, "not a workshop name"),
        ("escape-in-name", "WKSHP-API101\x1b[2J", "not a workshop name"),
        ("nul-in-name", "WKSHP-API\x00101", "not a workshop name"),
        ("dots", "WKSHP-..", "not a workshop name"),
    ]
    for slug, body, reason in cases:
        c = n.customer()
        yield refused(f"body-{slug}", mail(f"Subject: CREATE 3 {c}", body=body), reason)
    c = n.customer()
    yield refused("body-attachment-only", (
        f"Subject: CREATE 3 {c}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=q\n"
        "\n--q\nContent-Type: application/octet-stream\nContent-Disposition: attachment\n\n"
        "AAAA\n--q--\n").encode(), "the mail has no text part")
    for depth, parts in ((17, 17), (100, 100), (1000, 1000)):
        c = n.customer()
        text = f"Subject: CREATE 3 {c}\nMIME-Version: 1.0\n"
        for level in range(depth):
            text += f"Content-Type: multipart/mixed; boundary=b{level}\n\n--b{level}\n"
        text += "Content-Type: text/plain\n\nWKSHP-API101\n"
        text += "".join(f"--b{level}--\n" for level in reversed(range(depth)))
        # 1000 levels fit the size limit only with bare-LF line ends.
        yield refused(f"mime-nested-{depth}", text.encode(),
                      f"MIME structure too complex: {parts} multipart parts",
                      styles=("lf",) if depth == 1000 else ("lf", "crlf"))
    c = n.customer()
    yield refused("oversize", mail(f"Subject: CREATE 3 {c}",
                                   body="WKSHP-API101\n" + "x" * 70000),
                  "exceeds the 65536-byte limit")
    c = n.customer()
    yield refused("bad-charset", (
        f"Subject: CREATE 3 {c}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=nonesuch"
        "\n\nWKSHP-Nope\n").encode(), "unknown workshop WKSHP-Nope")
    c = n.customer()
    yield refused("latin1-garbage", f"Subject: CREATE 3 {c}\n\n".encode() + b"\xff\xfe\xfd\n",
                  "not a workshop name")


def smuggling(n: Numbers) -> Iterator[Case]:
    """Line-ending attacks, sent byte for byte in a CRLF session."""
    for index, (slug, separator) in enumerate([
        ("lf-dot-lf", b"\n.\n"), ("lf-dot-crlf", b"\n.\r\n"), ("crlf-dot-lf", b"\r\n.\n"),
    ]):
        c = n.customer()
        inner = (b"MAIL FROM:<" + ALLOWED.encode() + b">\nRCPT TO:<w@backend>\nDATA\n"
                 + f"Subject: PURGE {index + 1} {c + 1}\n\nWKSHP-API101".encode())
        data = (f"Subject: CREATE {index + 1} {c}\r\n\r\nWKSHP-API101".encode() + separator
                + inner + b"\r\n")
        yield Case(f"smuggle-{slug}", data, "refused", reason="possible SMTP smuggling",
                   styles=("raw",))


def not_orders(n: Numbers) -> Iterator[Case]:
    """Mail that is not an order: refused, and its body never stored."""
    for index in range(12):
        secret = f"Pw-secret-{index:03d}-Zq"
        data = mail("Subject: Workshops-on-Demand credentials", "From: " + ALLOWED,
                    f"To: participant{index}@example.com",
                    body=f"Hello,\nUser Name: student{index}\nPassword: {secret}\n", blank=False)
        yield Case(f"credentials-{index}", data, "refused", reason="not an order",
                   secret=secret)
    for slug, subject in [("welcome", "Welcome to Workshops-on-Demand"),
                          ("reminder", "Your workshop ends in 1 hour"),
                          ("spam", "You won!!! Click here"), ("empty-ish", "   ")]:
        secret = f"token-{slug}-9f8e7d"
        yield Case(f"nonorder-{slug}", mail(f"Subject: {subject}", body=f"secret {secret}"),
                   "refused", reason="", secret=secret)


def cases() -> list[Case]:
    n = Numbers()
    return [*orders(n), *subjects(n), *headers(n), *bodies(n), *smuggling(n), *not_orders(n)]


def main() -> None:
    mails = HERE / "mails"
    mails.mkdir(exist_ok=True)
    for old in mails.glob("*.eml"):
        old.unlink()
    manifest = []
    for case in cases():
        for style in case.styles:
            name = f"{len(manifest) + 1:03d}-{case.slug}-{style}.eml"
            (mails / name).write_bytes(case.mail)
            entry: dict[str, Any] = {"file": name, "style": style, "mail_from": case.mail_from,
                                     "expect": case.expect}
            if case.expect == "accepted":
                entry["fields"] = case.fields
            else:
                entry["reason"] = case.reason
            if case.secret:
                entry["secret"] = case.secret
            manifest.append(entry)
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(manifest)} mails written to {mails}")


if __name__ == "__main__":
    main()
