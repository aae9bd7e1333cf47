"""The intake: an aiosmtpd handler turning SMTP transactions into journaled orders.

For each complete transaction: check the peer and sender allow-lists, parse the order, commit
it (or the refusal, with its reason) to the journal, hand accepted orders to the executor,
and only then answer. Mail for the relay is checked by the relay's own policy (senders,
recipients, rate per client) instead; its refusals are recorded the same way. Replies say
why in plain words; clients like the portal never read them, which is why every refusal is
recorded too.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from wodmail import metrics
from wodmail.addresses import envelope_address
from wodmail.config import Config, Notebooks
from wodmail.dispatch.executor import Executor
from wodmail.intake.bursts import BurstLog, PeerRate
from wodmail.intake.gate import in_networks, peer_host
from wodmail.intake.parse import looks_like_order, parse_order
from wodmail.intake.redact import headers_only
from wodmail.intake.smtp import Handler
from wodmail.journal.store import Arrival, Journal
from wodmail.orders import Order, OrderRules, Rejection
from wodmail.relay.sender import Relay

log = structlog.get_logger(__name__)

# Refusals recorded per client: this many at once, then this many per second on average
# (an event's worth of portal mails fits; a flood from one client does not).
REFUSALS_RECORDED_AT_ONCE = 300
REFUSALS_RECORDED_PER_SECOND = 5.0


def _subject_of(data: bytes) -> str | None:
    for line in data.splitlines()[:50]:
        if line[:8].lower() == b"subject:":
            return line[8:].strip().decode("utf-8", "replace")[:200]
    return None


def _rate_key(session: Any) -> str:
    """Whom the relay's rate limit counts a mail against: the client's address, and the
    local uid holding its socket when it connects from this machine (each student apart)."""
    host = peer_host(session.peer) or "(unknown)"
    uid = getattr(session, "local_uid", None)  # found by the gate at connect
    return host if uid is None else f"{host} uid {uid}"


class _WorkshopFolders:
    """Does a workshop folder exist? Yes answers are kept briefly: a burst of orders for one
    workshop costs one lookup, and a removed workshop is refused again within seconds."""

    def __init__(self, notebooks: Notebooks, *, keep_seconds: float = 5.0) -> None:
        self._notebooks = notebooks
        self._keep = keep_seconds
        self._seen: dict[str, float] = {}

    def exists(self, content: str) -> bool:
        now = time.monotonic()
        if self._seen.get(content, 0.0) > now:
            return True
        if self._notebooks.folder_of(content) is None:
            self._seen.pop(content, None)
            return False
        self._seen[content] = now + self._keep
        return True


class IntakeHandler(Handler):
    """aiosmtpd handler hooks: `handle_MAIL`, `handle_DATA`, `handle_OVERSIZE`."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        executor: Executor,
        *,
        senders: list[str] | None = None,
        relay: Relay | None = None,
    ) -> None:
        self._journal = journal
        self._relay = relay
        self._refusal_rate = PeerRate(REFUSALS_RECORDED_AT_ONCE, REFUSALS_RECORDED_PER_SECOND)
        self.unrecorded_refusals = BurstLog("refused mails not recorded one by one (too many"
                                            " from one client; summary of a burst)")
        self.relay_deferred = BurstLog("mails to relay deferred with 451: over"
                                       " relay.max_per_minute (summary of a burst)")
        self._executor = executor
        self.configure(config, senders)

    def configure(self, config: Config, senders: list[str] | None = None) -> None:
        """Takes the allow-lists and limits of `config` for the transactions from now on
        (at start and on a reload; sessions already connected included)."""
        self._networks = config.networks()
        self._senders = frozenset(config.allowed_senders if senders is None else senders)
        self._senders_check = config.allowed_senders_check
        self._limit = config.max_message_bytes
        notebooks = config.notebooks
        exists = None
        if notebooks.public is not None or notebooks.private is not None:
            exists = _WorkshopFolders(notebooks).exists
        self._rules = OrderRules(
            student_min=config.students.min,
            student_max=config.students.max,
            workshop_exists=exists,
        )

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        host = peer_host(session.peer)
        if not in_networks(host, self._networks):
            reason = f"client {host} is not in allowed_networks"
            await self._refuse(reason, Arrival(peer=host, envelope_from=address))
            return f"550 5.7.1 {reason}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.content or b""
        subject = _subject_of(data)
        arrival = Arrival(
            peer=peer_host(session.peer),
            envelope_from=envelope.mail_from,
            # A refused mail that is not even meant as an order (a participant's credentials
            # mail) is recorded with a few headers only: its body never reaches the disk.
            raw=data if looks_like_order(subject) else headers_only(data, envelope.rcpt_tos),
            subject=subject,
        )
        if getattr(envelope, "bare_lf_end", False):
            reason = (
                "a bare-LF end of data (LF . LF) inside a CRLF session: refused as possible"
                " SMTP smuggling"
            )
            return await self._refuse(reason, arrival)
        if self._relay is not None and not self._relay.is_order_mail(envelope.rcpt_tos):
            return await self._relay_mail(self._relay, session, envelope, data, arrival)
        parsed = parse_order(data, self._rules)
        refusal = self._sender_refusal(envelope.mail_from, parsed.sender)
        if refusal is not None:
            return await self._refuse(refusal, arrival, sender=parsed.sender)
        if isinstance(parsed, Rejection):
            return await self._refuse(
                parsed.reason,
                arrival,
                verb=parsed.verb,
                message_id=parsed.message_id,
                sender=parsed.sender,
                student=parsed.student,
                workshop=parsed.workshop,
            )
        return await self._accept(parsed, arrival)

    async def _relay_mail(
        self, relay: Relay, session: Any, envelope: Any, data: bytes, arrival: Arrival
    ) -> str:
        """A mail for the relay: its sender and recipients checked (a refusal is recorded
        as an order's is), then the client's rate, then into the outbox."""
        recipients = list(envelope.rcpt_tos)
        refusal = relay.policy.check(envelope.mail_from, recipients, data)
        if refusal is not None:
            return await self._refuse(refusal.reason, arrival, sender=refusal.sender)
        client = _rate_key(session)
        if not relay.policy.rate.take(client):
            # Counted and summed up once per burst; the client may send it again later.
            self.relay_deferred.add(client, limit=relay.policy.rate.limit)
            metrics.refused_kind("rate")
            wait = relay.policy.rate.retry_in(client)
            return (f"451 4.7.0 too many mails relayed for {client}: relay.max_per_minute is"
                    f" {relay.policy.rate.limit}, try again in {max(1, round(wait))} s")
        return await relay.take(
            mail_from=envelope.mail_from, recipients=recipients, raw=data,
            peer=arrival.peer, helo=session.host_name,
        )

    def _sender_refusal(self, envelope_from: str | None, header_from: str | None) -> str | None:
        """Why the sender is not allowed under `allowed_senders_check`, or None.

        `envelope`: MAIL FROM must be allowed (the null sender `<>` never is); `header`: the
        From header must be there and allowed; `both`: MAIL FROM, and the From header too
        when the mail has one (the portal's and the admin tool's mails have none).
        """
        if not self._senders:
            return None
        mode = self._senders_check
        if mode in ("envelope", "both"):
            envelope = envelope_address(envelope_from)
            if envelope is None:
                return "sender not allowed: <> (envelope: the null sender)"
            if envelope not in self._senders:
                return f"sender not allowed: {envelope} (envelope)"
        if mode == "header" and header_from is None:
            return "sender not allowed: no From header (allowed_senders_check is header)"
        header = envelope_address(header_from) if mode != "envelope" else None
        if header is not None and header not in self._senders:
            return f"sender not allowed: {header} (From header)"
        return None

    async def handle_OVERSIZE(self, server: Any, session: Any, envelope: Any, size: int) -> None:
        reason = f"message of {size} bytes exceeds the {self._limit}-byte limit"
        await self._refuse(
            reason, Arrival(peer=peer_host(session.peer), envelope_from=envelope.mail_from)
        )

    async def handle_INCOMPLETE(self, server: Any, session: Any, envelope: Any) -> None:
        log.warning(
            "client left mid-transaction; nothing to record",
            peer=peer_host(session.peer),
            envelope_from=envelope.mail_from,
        )

    async def _accept(self, order: Order, arrival: Arrival) -> str:
        try:
            acceptance = await self._journal.accept(order, arrival)
        except Exception as exc:
            log.error("journal write failed; order not acknowledged", error=str(exc))
            return "451 4.3.0 could not record the order, please try again"
        metrics.order_accepted(order.verb.value, acceptance.duplicate)
        if acceptance.duplicate:
            log.info("duplicate order acknowledged", job=acceptance.job_id, peer=arrival.peer)
            return f"250 2.0.0 OK duplicate of job {acceptance.job_id}"
        self._executor.submit(acceptance.job)
        log.info(
            "order accepted",
            job=acceptance.job_id,
            verb=order.verb.value,
            student=order.student_field,
            customer=order.customer,
            workshop=order.workshop,
            peer=arrival.peer,
        )
        return f"250 2.0.0 OK job {acceptance.job_id}"

    async def _refuse(
        self,
        reason: str,
        arrival: Arrival,
        *,
        verb: str | None = None,
        message_id: str | None = None,
        sender: str | None = None,
        student: int | None = None,
        workshop: str | None = None,
    ) -> str:
        metrics.refused(reason)
        peer = arrival.peer or "(unknown)"
        if not self._refusal_rate.take(peer, time.monotonic()):
            # A flood of refused mail: each is still refused, but not written down one by
            # one (the journal and the log would grow with it); counted per burst instead.
            self.unrecorded_refusals.add(peer, reason=reason)
            return f"550 5.6.0 {reason} (not recorded: too many refusals from {peer})"
        try:
            job_id = await self._journal.reject(
                reason, arrival, verb=verb, message_id=message_id, sender=sender,
                student=student, workshop=workshop,
            )
        except Exception as exc:
            log.error("journal write failed for a refusal", reason=reason, error=str(exc))
            return f"550 5.6.0 {reason}"
        log.warning(
            "order refused",
            job=job_id,
            reason=reason,
            peer=arrival.peer,
            envelope_from=arrival.envelope_from,
        )
        return f"550 5.6.0 {reason} (job {job_id})"
