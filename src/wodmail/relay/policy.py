"""Who may relay, to how many, how often: the relay's checks before a mail enters the outbox.

- The sender: MAIL FROM, and each originator header the mail has (From, Sender, Resent-From,
  Resent-Sender: what mail programs show as its author), must be in `relay.allowed_senders`;
  a header's address is the one in `<...>`, never its display name, as for orders. The
  headers are read as `message.split_message` reads them, the very block that leaves. No
  sender allowed (the list is empty): nothing is relayed.
- The recipients: at most `relay.max_recipients` per mail. The whole mail is refused at
  DATA (550) rather than the extra recipients at RCPT (452, RFC 5321 4.5.3.1.10): MTAs take
  a 452 as "send the rest in another transaction", so it only splits a mass mailing into
  batches, and programs (smtplib, nodemailer) send to the accepted recipients and report
  success; a 550 at DATA is one failure the sender sees, and it is recorded. Whether a mail
  is relayed at all is only known at DATA (a mail to the order mailbox too is an order).
- The rate: at most `relay.max_per_minute` mails per client key (`ratelimit`); beyond it
  the client gets a 451 and may try again later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wodmail.addresses import AddressError, envelope_address, from_address
from wodmail.config import Relay as RelaySettings
from wodmail.orders import shown
from wodmail.relay.message import header_values, split_message
from wodmail.relay.ratelimit import SlidingWindow

# Header (as matched, lower case) and its name in reasons.
ORIGINATORS = ((b"from", "From"), (b"sender", "Sender"), (b"resent-from", "Resent-From"),
               (b"resent-sender", "Resent-Sender"))
RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Refusal:
    """Why a mail is not relayed (one line of printable ASCII), and its From address."""

    reason: str
    sender: str | None = None


class RelayPolicy:
    """The relay's allow-list, recipient limit and rate limit (`rate`, clock injectable)."""

    def __init__(
        self, settings: RelaySettings, senders: Iterable[str], *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_recipients = settings.max_recipients
        self.rate = SlidingWindow(settings.max_per_minute, RATE_WINDOW_SECONDS, clock)
        self.configure(senders)

    def configure(self, senders: Iterable[str]) -> None:
        """The senders allowed from now on (at start and on a reload)."""
        self.senders = frozenset(sender.strip().lower() for sender in senders)

    def check(self, mail_from: str | None, recipients: list[str], raw: bytes) -> Refusal | None:
        """Why this mail may not be relayed, or None."""
        headers, _body = split_message(raw)
        if any(b"\r" in line or b"\0" in line for line in headers):
            return Refusal("relay refused: a bare CR or a NUL in the header block (mail"
                           " programs would read other headers than the ones checked)")
        try:
            originators = _originators(headers)
        except AddressError as error:
            return Refusal(f"relay refused: {error}")
        sender = next((address for name, address in originators if name == "From"), None)
        reason = self._sender_refusal(mail_from, originators)
        if reason is None and len(recipients) > self.max_recipients:
            reason = (f"relay refused: {len(recipients)} recipients, relay.max_recipients is"
                      f" {self.max_recipients}")
        return None if reason is None else Refusal(reason, sender)

    def _sender_refusal(
        self, mail_from: str | None, originators: list[tuple[str, str]]
    ) -> str | None:
        if not self.senders:
            return ("sender not allowed to relay: relay.allowed_senders is empty (no"
                    " allowed_senders, no WODSENDER): nothing is relayed")
        envelope = envelope_address(mail_from)
        if envelope is None:
            return "sender not allowed to relay: <> (envelope: the null sender)"
        if envelope not in self.senders:
            return (f"sender not allowed to relay: {_safe(envelope)} (envelope; not in"
                    " relay.allowed_senders)")
        for name, address in originators:
            if address.lower() not in self.senders:
                return (f"sender not allowed to relay: {_safe(address)} ({name} header; not in"
                        " relay.allowed_senders)")
        return None


def _originators(headers: list[bytes]) -> list[tuple[str, str]]:
    """(header name, its one address) for each originator header present; AddressError for
    a repeated one or one that is not exactly one address."""
    found = []
    for match, name in ORIGINATORS:
        values = header_values(headers, match)
        if len(values) > 1:
            raise AddressError(f"{len(values)} {name} headers: a mail has at most one")
        if values:
            found.append((name, from_address(values[0], name)))
    return found


def _safe(text: str) -> str:
    """An address as a reason shows it: as is if printable ASCII, else escaped and quoted."""
    return text if text.isascii() and text.isprintable() else shown(text)
