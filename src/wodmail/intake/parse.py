"""The mail parser: one mail's bytes in, one validated `Order` or one `Rejection` out.

This module is pure: it reads nothing and writes nothing. The only outside knowledge it
needs (does this workshop exist?) comes in as a callable in `OrderRules`.

What the real clients send (the portal, the old netcat test tool, ordinary mail software),
in short: the subject carries the verb and the ids, the body's first non-empty line
carries the workshop::

    Subject: CREATE 401 825 jane@example.com      portal CREATE (e-mail informational)
    Subject: CLEANUP 401 825                      portal CLEANUP / RESET / PURGE
    Subject: RESET 1,6 825                        RESET of a student range
    Subject: CREATE 121 0                         admin test: customer 0, no participant
    Subject: CREATE 121 WKSHP-API101              compact: the workshop is in the subject
    Subject: PURGE [object Promise] 825           the portal's bug: student unknown

Decisions taken here (the spec leaves them open):

- `[object Promise]` instead of a student id is accepted for RESET, PURGE and CLEANUP: by then
  the portal has long assigned the customer's student, so the API-DB can tell us who it is.
  It is refused for CREATE: the unresolved Promise there is the very assignment of a student,
  so the customer's student may not exist yet and guessing could hand out someone else's
  account. It is also refused when there is no customer to ask (customer 0, compact form).
- Compact form: the workshop in the subject wins and the body is not read at all, so a body
  that says "Hello" or names another workshop does not matter.
- One word after the ids is tolerated for every verb and kept as `email` (informational):
  the old backend ignored everything after the ids, and a CREATE must not be lost over an
  informational field. Two or more extra words mean a mangled subject and are refused.
- A RESET range `N,N` is the single student N, so both spellings give the same dedup key.
- Every rejection reason is one line of printable ASCII (it ends up in an SMTP reply);
  anything quoted from the mail is shown repr-escaped and truncated.
"""

from __future__ import annotations

import codecs
import email
import email.policy
import re
import unicodedata
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser

from wodmail.addresses import AddressError, from_address
from wodmail.orders import (
    CUSTOMER_ID_MAX,
    Order,
    OrderRules,
    Rejection,
    Verb,
    content_of,
    is_workshop_name,
)
from wodmail.orders import shown as _shown

__all__ = ["MAX_MULTIPART_PARTS", "looks_like_order", "parse_order", "split_head_body"]

_RECORDED_MAX = 998  # characters of subject, Message-ID, sender, e-mail kept on a record
_PROMISE = "[object Promise]"

# RFC 5322 field name: printable ASCII except the colon, then the colon.
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_WORKSHOP_PREFIX = re.compile(r"(WKSHP|CHLG)-")
_PROMISE_TOKEN = re.compile(r"\[object\s+Promise\]")
_SUBJECT_TOKEN = re.compile(rf"{_PROMISE_TOKEN.pattern}|\S+")
_AROUND_COMMA = re.compile(r"\s*,\s*")
_NUMBER = re.compile(r"-?[0-9]+")
_RANGE = re.compile(r"(-?[0-9]+),(-?[0-9]+)")
_NUMBER_SHOWN_MAX = 20
MAX_MULTIPART_PARTS = 16
_MULTIPART_LINE = re.compile(rb"(?i)content-type:\s*multipart/")
_PLAIN_SUBJECT = re.compile(r"[ -~\t]*")  # printable ASCII, spaces and tabs: nothing to check


class _Refused(Exception):
    """Internal: the mail is not an acceptable order; the message is the reason."""


def parse_order(data: bytes, rules: OrderRules) -> Order | Rejection:
    """Turn one mail (the DATA bytes as received) into an `Order` or a `Rejection`.

    Never raises: anything unexpected becomes a Rejection("unreadable mail: ...").
    """
    try:
        return _MailReader(_as_bytes(data), rules).read()
    except Exception as error:  # the contract is "never raises"
        return Rejection(reason=f"unreadable mail: {_describe(error)}")


# --- reading one mail ------------------------------------------------------------------


class _MailReader:
    """Reads one mail; `read()` builds the Order or the Rejection."""

    def __init__(self, data: bytes, rules: OrderRules) -> None:
        self.rules = rules
        self.head, body = split_head_body(data)
        self.message_id = _message_id(_raw_header(self.head, "Message-ID"))
        self.sender: str | None = None
        self.subject: str | None = None
        self.verb: Verb | None = None
        self.student: int | None = None
        self.workshop: str | None = None
        self._body = body

    def read(self) -> Order | Rejection:
        try:
            return self._order()
        except _Refused as refusal:
            return Rejection(
                reason=str(refusal),
                subject=_recorded(self.subject),
                message_id=self.message_id,
                sender=self.sender,
                verb=self.verb.value if self.verb else None,
                student=self.student,
                workshop=self.workshop or self._named_workshop(),
            )

    def _named_workshop(self) -> str | None:
        """The workshop the body names, for the record of a mail refused before it was read
        (its subject got as far as the verb, so the MIME checks have passed)."""
        if self.verb is None:
            return None
        try:
            if _is_plain(self.head):
                return _workshop_line(_plain_text(self._body))
            return _body_workshop(_message(self.head, self._body))
        except Exception:  # whatever it holds, the refusal's reason stands
            return None

    def _order(self) -> Order:
        _check_single_headers(self.head)
        self.sender = _address(_raw_header(self.head, "From"))
        message = None
        if not _is_plain(self.head):
            _check_mime_complexity(self.head, self._body)
            message = _message(self.head, self._body)
        if message is None:
            self.subject = _plain_subject(self.head)
        else:
            self.subject = _subject(message, self.head)
        if self.subject is None:
            raise _Refused("no Subject header")
        _check_subject_characters(self.subject)
        self.subject = " ".join(self.subject.split())
        tokens = _SUBJECT_TOKEN.findall(_AROUND_COMMA.sub(",", self.subject))
        self.verb = _verb(tokens, self.subject)
        self.student = _named_student(tokens)
        ids = _read_ids(self.verb, tokens, self.subject, self.rules)
        if ids.workshop:
            workshop = ids.workshop
        elif message is None:
            workshop = _workshop_line(_plain_text(self._body))
        else:
            workshop = _body_workshop(message)
        self.workshop = workshop
        content, mode = content_of(workshop)
        self._check_exists(workshop, content)
        return Order(
            verb=ids.verb,
            student=ids.student,
            student_max=ids.student_max,
            customer=ids.customer,
            email=ids.email,
            workshop=workshop,
            content=content,
            mode=mode,
            message_id=self.message_id,
            sender=self.sender,
        )

    def _check_exists(self, workshop: str, content: str) -> None:
        if self.rules.workshop_exists is None:
            return
        try:
            exists = self.rules.workshop_exists(content)
        except Exception as error:  # the injected check is not ours
            raise _Refused(f"could not check workshop {workshop}: {_describe(error)}") from None
        if not exists:
            detail = f" (no content {content})" if content != workshop else ""
            raise _Refused(f"unknown workshop {workshop}{detail}")


# --- the subject -----------------------------------------------------------------------


@dataclass(frozen=True)
class _SubjectIds:
    """What the subject says: verb, student(s), customer, maybe the workshop and e-mail."""

    verb: Verb
    student: int | None
    student_max: int | None
    customer: int
    workshop: str | None  # compact form only
    email: str | None


def _read_ids(verb: Verb, tokens: list[str], subject: str, rules: OrderRules) -> _SubjectIds:
    """The ids after the verb, checked left to right."""
    if len(tokens) < 2:
        raise _Refused(f"subject {_shown(subject)} has no student id")
    promise = _PROMISE_TOKEN.fullmatch(tokens[1]) is not None
    student, student_max = (None, None) if promise else _students(verb, tokens[1], rules)
    if len(tokens) < 3:
        raise _Refused(f"subject {_shown(subject)} has no customer id")
    customer, workshop = _customer_or_workshop(tokens[2])
    if promise:
        _check_promise(verb, customer)
    extra = tokens[3:]
    if len(extra) > 1:
        raise _Refused(f"unexpected text at the end of the subject: {_shown(' '.join(extra))}")
    return _SubjectIds(
        verb=verb,
        student=student,
        student_max=student_max,
        customer=customer,
        workshop=workshop,
        email=_recorded(extra[0]) if extra else None,
    )


def _named_student(tokens: list[str]) -> int | None:
    """The student (a range's first) the subject names, valid or not: a refused order is
    recorded with it, so `wodmail jobs --student N` finds it."""
    if len(tokens) < 2:
        return None
    first = tokens[1].split(",", 1)[0]
    if not _NUMBER.fullmatch(first) or len(first) > 18:
        return None
    return int(first)


def _students(verb: Verb, token: str, rules: OrderRules) -> tuple[int, int | None]:
    """One student, or a RESET range MIN,MAX (MAX None when the range is one student)."""
    if "," in token:
        return _range(verb, token, rules)
    if not _NUMBER.fullmatch(token):
        raise _Refused(f"student id {_shown(token)} is not a number")
    student = _int(token)
    if not rules.student_min <= student <= rules.student_max:
        raise _Refused(_outside(token, rules))
    return student, None


def _range(verb: Verb, token: str, rules: OrderRules) -> tuple[int, int | None]:
    if verb is not Verb.RESET:
        raise _Refused("a student range is only allowed for RESET")
    match = _RANGE.fullmatch(token)
    if match is None:
        raise _Refused(f"student range {_shown(token)} is not of the form MIN,MAX")
    low_text, high_text = match.groups()
    low, high = _int(low_text), _int(high_text)
    shown = f"{_shown_number(low_text)},{_shown_number(high_text)}"
    if low > high:
        raise _Refused(f"range {shown}: MIN is greater than MAX")
    for value, text in ((low, low_text), (high, high_text)):
        if not rules.student_min <= value <= rules.student_max:
            raise _Refused(f"range {shown}: {_outside(text, rules)}")
    return low, (high if high != low else None)


def _check_promise(verb: Verb, customer: int) -> None:
    if verb is Verb.CREATE:
        raise _Refused(f"CREATE needs a student id, got {_shown(_PROMISE)}")
    if customer == 0:
        raise _Refused(f"student id {_shown(_PROMISE)} cannot be looked up without a customer id")


def _verb(tokens: list[str], subject: str) -> Verb:
    if not tokens:
        raise _Refused("not an order: the subject is empty")
    if tokens[0] in Verb.__members__:
        return Verb(tokens[0])
    hint = " (verbs are upper case)" if tokens[0].upper() in Verb.__members__ else ""
    raise _Refused(
        f"not an order: subject {_shown(subject)} does not start with"
        f" CREATE, CLEANUP, RESET or PURGE{hint}"
    )


def _customer_or_workshop(token: str) -> tuple[int, str | None]:
    """The third subject word: a customer id, or the workshop of the compact form."""
    if _WORKSHOP_PREFIX.match(token):
        if not is_workshop_name(token):
            raise _Refused(f"not a workshop name: {_shown(token)}")
        return 0, token
    if not _NUMBER.fullmatch(token):
        raise _Refused(f"customer id {_shown(token)} is not a number")
    if token.startswith("-"):
        raise _Refused(f"customer id {_shown_number(token)} is negative")
    customer = _int(token)
    if customer > CUSTOMER_ID_MAX:
        raise _Refused(f"customer id {_shown_number(token)} is too large (max {CUSTOMER_ID_MAX})")
    return customer, None


def _outside(text: str, rules: OrderRules) -> str:
    return f"student {_shown_number(text)} outside {rules.student_min}..{rules.student_max}"


def _int(digits: str) -> int:
    """An int from `-?[0-9]+`; absurdly long ones are clamped (they fail every range check)."""
    sign = -1 if digits.startswith("-") else 1
    magnitude = digits.lstrip("-")
    if len(magnitude) > 30:  # also keeps clear of int()'s digit limit
        return sign * 10**30
    return sign * int(magnitude)


def _shown_number(digits: str) -> str:
    """A number as the reason shows it: normalised, or truncated when absurdly long."""
    if len(digits) > _NUMBER_SHOWN_MAX:
        return digits[:_NUMBER_SHOWN_MAX] + "..."
    return str(int(digits))


def _subject(message: Message, head: list[bytes]) -> str | None:
    """The decoded Subject (RFC 2047 words decoded, unfolded), or None when there is none."""
    raw = _raw_header(head, "Subject")
    if raw is None:
        return None
    try:
        decoded = message.get("Subject")
        if decoded is not None:
            return str(decoded)
    except Exception:  # the header parser choked: use the raw text
        pass
    return raw


# --- the body --------------------------------------------------------------------------


def _body_workshop(message: Message) -> str:
    text = _body_text(message)
    if text is None:
        raise _Refused("no workshop named in the body: the mail has no text part")
    return _workshop_line(text)


def _workshop_line(text: str) -> str:
    line = _first_line(text)
    if line is None:
        raise _Refused("no workshop named in the body")
    if not is_workshop_name(line):
        raise _Refused(f"not a workshop name: {_shown(line)}")
    return line


def _first_line(text: str) -> str | None:
    """The first non-empty line before any signature ("-- "), stripped."""
    for line in text.splitlines():
        if line.rstrip() == "--":
            return None
        stripped = line.strip().lstrip("\ufeff").strip()
        if stripped:
            return stripped
    return None


def _body_text(message: Message) -> str | None:
    """The first text/plain part, else the first text/html part stripped of tags."""
    parts = [part for part in message.walk() if not part.is_multipart()]
    for wanted in ("text/plain", "text/html"):
        for part in parts:
            if part.get_content_type() == wanted and not _is_attachment(part):
                text = _decoded_payload(part)
                return _html_text(text) if wanted == "text/html" else text
    return None


def _is_attachment(part: Message) -> bool:
    try:
        return part.get_content_disposition() == "attachment"
    except Exception:  # an unreadable disposition is not an attachment
        return False


def _decoded_payload(part: Message) -> str:
    """The part's text: transfer encoding undone, then its charset, utf-8, latin-1."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    payload = payload.removeprefix(codecs.BOM_UTF8)  # even when the charset says otherwise
    for charset in (_charset(part), "utf-8"):
        if charset is None:
            continue
        try:
            return payload.decode(charset)
        except (LookupError, UnicodeError, ValueError):
            continue
    return payload.decode("latin-1")


def _charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
        if charset is None:
            return None
        codecs.lookup(charset)  # raises LookupError for unknown names
        return charset
    except Exception:  # an unreadable charset is no charset
        return None


class _HtmlText(HTMLParser):
    """Text of an HTML body, one line per block element, scripts and styles dropped."""

    _BREAKS = frozenset(
        {"br", "p", "div", "tr", "li", "ul", "ol", "table", "blockquote", "pre", "hr"}
        | {"h1", "h2", "h3", "h4", "h5", "h6", "section"}
    )
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden_depth += 1
        elif tag in self._BREAKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif tag in self._BREAKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.chunks.append(data)


def _html_text(html: str) -> str:
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # broken markup: strip tags the blunt way
        return re.sub(r"<[^>]*>", "\n", html)
    return "".join(parser.chunks)


# --- the header block ------------------------------------------------------------------


def split_head_body(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """Header lines and body lines, repairing a missing blank line between them.

    The portal writes the workshop right under the Subject line. So the header block ends
    at a blank line or at the first line that is neither a header (`name:`) nor a folded
    continuation (leading whitespace); that line is the first line of the body.
    """
    lines = data.splitlines()  # bytes: splits on \r\n, \n and \r alike
    head: list[bytes] = []
    for index, line in enumerate(lines):
        if not line:
            return head, lines[index + 1 :]
        folded = line[:1] in (b" ", b"\t")
        if (folded and head) or (not folded and _HEADER_LINE.match(line)):
            head.append(line)
            continue
        return head, lines[index:]
    return head, []


# Headers that make a mail MIME (or encoded): only such mails need the email package. The
# others (the portal's, netcat's, most smtplib mails) are read directly, with the same
# result and a fraction of the cost (the order parse sits on the intake's hot path).
_MIME_HEADER = re.compile(rb"(?i)(content-[a-z-]*|mime-version)\s*:")


def _is_plain(head: list[bytes]) -> bool:
    subject = _raw_header(head, "Subject")
    if subject is not None and "=?" in subject:
        return False
    return not any(_MIME_HEADER.match(line) for line in head)


def _plain_subject(head: list[bytes]) -> str | None:
    return _raw_header(head, "Subject")


def _plain_text(body: list[bytes]) -> str:
    """A non-MIME body as the email package would decode it: utf-8, else latin-1."""
    payload = (b"\n".join(body) + b"\n").removeprefix(codecs.BOM_UTF8)
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


def _message(head: list[bytes], body: list[bytes]) -> Message:
    """The MIME message, from a header block and body now properly separated."""
    repaired = b"\n".join(head) + b"\n\n" + b"\n".join(body) + b"\n"
    return email.message_from_bytes(repaired, policy=email.policy.default)


def _raw_header(head: list[bytes], name: str) -> str | None:
    """The first header called `name`, unfolded, as text (undecoded); None if absent."""
    wanted = name.lower().encode("ascii") + b":"
    value: list[bytes] | None = None
    for line in head:
        folded = line[:1] in (b" ", b"\t")
        if value is not None:
            if not folded:
                break
            value.append(line)
        elif not folded and line.lower().startswith(wanted):
            value = [line[len(wanted) :]]
    if value is None:
        return None
    # Only SMTP's own blanks: str.strip() would also eat U+001C..U+001F, which the email
    # package keeps, so the two readings of one mail would differ.
    return b"".join(value).decode("utf-8", errors="replace").strip(" \t\r\n")


def _message_id(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = raw.strip()
    if value.startswith("<") and ">" in value:
        value = value[1 : value.index(">")]
    value = "".join(value.split()).strip("<>")
    return _recorded(value) or None


def _address(raw: str | None) -> str | None:
    """The one address of a From header (see `wodmail.addresses.from_address`)."""
    if raw is None:
        return None
    try:
        return _recorded(from_address(raw))
    except AddressError as error:
        raise _Refused(str(error)) from None


def looks_like_order(subject: str | None) -> bool:
    """Whether a mail means to be an order (its subject starts with a verb, in any case),
    however malformed: only such mails have their body kept when refused."""
    words = (subject or "").split(None, 1)
    return bool(words) and words[0].upper().strip(":") in Verb.__members__


def _check_single_headers(head: list[bytes]) -> None:
    """An order has one Subject and at most one From: which one would count is a guess."""
    for name in ("Subject", "From"):
        count = _header_count(head, name)
        if count > 1:
            raise _Refused(f"{count} {name} headers: an order has exactly one")


def _header_count(head: list[bytes], name: str) -> int:
    wanted = name.lower().encode("ascii") + b":"
    return sum(1 for line in head if line[: len(wanted)].lower() == wanted)


def _check_mime_complexity(head: list[bytes], body: list[bytes]) -> None:
    """A few multipart parts at most: a deeply nested mail would exhaust the MIME parser's
    recursion, and no order needs more than a handful."""
    parts = sum(1 for line in head if _MULTIPART_LINE.match(line))
    parts += sum(1 for line in body if _MULTIPART_LINE.match(line))
    if parts > MAX_MULTIPART_PARTS:
        raise _Refused(
            f"MIME structure too complex: {parts} multipart parts (an order has at most"
            f" {MAX_MULTIPART_PARTS})"
        )


def _check_subject_characters(subject: str) -> None:
    """Words are separated by plain spaces or tabs: a no-break or ideographic space (or a
    control character) would split, or hide, words differently for people and programs."""
    if _PLAIN_SUBJECT.fullmatch(subject):
        return
    for char in subject:
        if char in " \t":
            continue
        category = unicodedata.category(char)
        if char.isspace() or category[0] in ("C", "Z") and category != "Co":
            name = unicodedata.name(char, "control character")
            raise _Refused(
                f"subject contains U+{ord(char):04X} ({name}): words must be separated by"
                " plain spaces"
            )


# --- small helpers ---------------------------------------------------------------------


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8", errors="surrogateescape")
    return bytes(data)


def _recorded(text: str | None) -> str | None:
    """Mail text kept on a record: valid unicode, bounded length."""
    if text is None:
        return None
    clean = text.encode("utf-8", errors="replace").decode("utf-8")
    return clean[:_RECORDED_MAX]


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return ascii(described[:200])[1:-1]
