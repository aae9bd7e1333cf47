"""The SMTP server: aiosmtpd, bent to accept the clients that really send orders.

`OrderSMTP` is an `aiosmtpd.smtp.SMTP` that knows nothing about workshops: it hands each
complete transaction to an aiosmtpd-style handler (`handle_DATA`, and optionally
`handle_MAIL`, `handle_RCPT`, ...) and adds two optional hooks of its own:

- `handle_OVERSIZE(server, session, envelope, size)`: a message went over the size limit and
  was refused with 552 (so the refusal can be recorded); returns nothing.
- `handle_INCOMPLETE(server, session, envelope)`: the client's input ended in the middle of a
  transaction (MAIL accepted, no final `.` line), which is therefore not delivered; returns
  nothing. `envelope.content` holds the DATA received so far, or None if DATA never started.

Where it deviates from stock aiosmtpd 1.4.6 (each override says why, citing the client):
bare-LF DATA lines and terminator, MAIL without HELO, PIPELINING advertised, a shorter
timeout before the first command (a 421, then the connection is closed), and above all
end of input: every complete transaction a client sent before hanging up is processed,
although nobody is left to read the replies (the portal hangs up on the greeting).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import re
import socket
import weakref
from collections.abc import Callable
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, syntax

from wodmail import metrics
from wodmail.intake.gate import ConnectionGate, Peer

log = structlog.get_logger(__name__)

DEFAULT_IDLE_TIMEOUT_SECONDS = 300.0
DEFAULT_GREETING_TIMEOUT_SECONDS = 30.0
_DATA_TERMINATORS = (b".\r\n", b".\n")
_KERNEL_DRAIN_CHUNK = 65536
_MAIL_SIZE_PARAMETER_ROOM = 26  # room for " SIZE=<n>" once SIZE is advertised (as aiosmtpd)
_MAIL_SMTPUTF8_PARAMETER_ROOM = 10  # room for " SMTPUTF8" once SMTPUTF8 is advertised


class _InputExhausted(BaseException):
    """The client's input ended (EOF, reset or idle timeout) and all of it has been read.

    A BaseException on purpose: aiosmtpd's command loop answers any Exception with a 500 and
    reads again, which at end of input would spin forever. This one passes through that loop
    to `OrderSMTP._handle_client`, which ends the session. `partial` holds the bytes after the
    last line ending (an unfinished line).
    """

    def __init__(self, partial: bytes) -> None:
        super().__init__("client input exhausted")
        self.partial = partial


class _ClientInput:
    """The session's StreamReader, read to its last byte and then `_InputExhausted`.

    aiosmtpd reads through `self._reader`; this wrapper only changes what end of input looks
    like (`asyncio.IncompleteReadError` becomes `_InputExhausted`).
    """

    def __init__(
        self, reader: asyncio.StreamReader, on_input: Callable[[], None] | None = None
    ) -> None:
        self._reader = reader
        self._on_input = on_input  # told of every line read
        self.before_waiting: Callable[[], None] | None = None
        self.in_data = False  # set while DATA lines are read (they do not decide crlf)
        self.crlf = False  # a command line ended in CRLF: the session is held to CRLF

    def holds_more(self) -> bool:
        """Has the client already sent bytes not read yet (pipelined commands)? False when
        it cannot be told (asyncio keeps its buffer private)."""
        return bool(getattr(self._reader, "_buffer", None))

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        if self.before_waiting is not None and separator not in getattr(
            self._reader, "_buffer", b""
        ):
            self.before_waiting()  # this read may wait: nothing may stay unsent meanwhile
        try:
            line = await self._reader.readuntil(separator)
        except asyncio.IncompleteReadError as eof:
            raise _InputExhausted(eof.partial) from None
        if not self.in_data and line.endswith(b"\r\n"):
            self.crlf = True
        if self._on_input is not None:
            self._on_input()
        return line

    async def read(self, n: int = -1) -> bytes:
        return await self._reader.read(n)

    async def readline(self) -> bytes:
        return await self._reader.readline()

    def feed_data(self, data: bytes) -> None:
        self._reader.feed_data(data)

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class _MessageBuffer:
    """The DATA of one transaction, unstuffed; its bytes are kept only while within the limit."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._content = bytearray()
        self.size = 0

    @property
    def oversize(self) -> bool:
        return bool(self._limit and self.size > self._limit)

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.oversize:
            self._content.clear()  # the message is refused anyway: stop holding it
        else:
            self._content += piece

    def content(self) -> bytes | None:
        return None if self.oversize else bytes(self._content)


# A plain address in MAIL FROM / RCPT TO, bracketed or not: dot-atom local part, host name.
# Anything else (quoted local parts, comments, source routes, <>, odd parameters) goes to the
# stock parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"\s*(?:<(?P<angled>{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
    rf"|(?P<bare>{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*))"
    r"(?P<rest>(?:\s+[A-Za-z0-9][A-Za-z0-9-]*(?:=[!-<>-~]+)?)*)\s*\Z",  # ESMTP parameters
)


class Handler:
    """A base for `OrderSMTP` handlers (optional). Why: on every connection stock aiosmtpd
    scans its handler with dir() for `handle_` hooks and with inspect.getmembers, which
    evaluates every attribute, for `auth_` methods (about half of a session's setup); a
    handler lists only those names (per class, once)."""

    def __dir__(self) -> list[str]:
        return _hook_names(type(self), ("handle_", "auth_"))


class OrderSMTP(SMTP):
    """aiosmtpd's SMTP protocol, accepting the portal, netcat and ordinary mail software.

    No STARTTLS and no AUTH are offered (orders come from an allow-listed network).
    `envelope.content` is always the raw bytes (`decode_data=False`), line endings as received.
    """

    def __init__(
        self,
        handler: Any,
        *,
        gate: ConnectionGate | None = None,
        greeting_timeout: float = DEFAULT_GREETING_TIMEOUT_SECONDS,
        on_input: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["decode_data"] = False
        super().__init__(handler, **kwargs)
        self._on_input = on_input
        self._gate = gate
        self._admitted = gate is None  # False: refused at connect (or not connected yet)
        self._gate_peer: Peer | None = None  # who the gate admitted, released once
        self._greeting_timeout = min(greeting_timeout, self._timeout_duration)
        self._awaiting_command = False  # connected, no command received yet
        # Stock keeps these limits in a class-level dict shared by all live sessions; give each
        # session its own so one client's EHLO does not change another's limits.
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        # Set once the client can send no more: EOF, reset, write error or idle timeout.
        self._input_ended = False
        self._eof_received = False  # a FIN: everything the client sent has been read
        self._reading_stopped = False  # `end_input`: we stopped reading (shutdown)
        self._held = bytearray()  # positive replies held back while more input is buffered

    # --- per-connection costs of stock aiosmtpd -------------------------------------------

    def __dir__(self) -> list[str]:
        # Why: stock SMTP.__init__ rebuilds its command and AUTH tables on every connection
        # with dir() and inspect.getmembers(self), evaluating every attribute and property:
        # about a third of a stock session's CPU. Those scans only keep names starting with
        # smtp_ or auth_; listing just those (per class, once) builds the same tables.
        return _hook_names(type(self), ("smtp_", "auth_"))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # Why: stock parses every MAIL FROM / RCPT TO address with the email package's RFC
        # 5322 parser, about a quarter of a stock session's CPU. Plain addresses (all that
        # the portal, netcat and mail software send) are read with one regex, to the same
        # result; anything else still goes to the stock parser.
        match = _PLAIN_ADDRESS.match(arg) if arg else None
        if match is None:
            return super()._getaddr(arg)
        address = match.group("angled") or match.group("bare")
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, match.group("rest").lstrip()

    # --- connect ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Why: a peer outside allowed_networks, or one connection too many, must cost no
        # session at all (a flood of idle connections would otherwise hold a task, a timer
        # and a file descriptor each until the idle timeout): one reply line, then close.
        if self._gate is not None:
            admission = self._gate.admit(
                transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            )
            if admission.refusal is not None:
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(admission.refusal.encode("ascii") + b"\r\n")
                transport.close()
                return
            self._admitted = True
            self._gate_peer = admission.peer
        super().connection_made(transport)
        if self.session is not None:
            # The local uid the gate found owning the client's socket (None: a remote
            # client), for the relay's per-uid rate limit.
            self.session.local_uid = self._gate_peer.uid if self._gate_peer else None
        # Why: a connection that sends nothing holds a session (a task, a timer, a file)
        # for the whole idle timeout; until its first command it gets a shorter one.
        self._reset_timeout(self._greeting_timeout)
        self._awaiting_command = True

    # --- end of input -------------------------------------------------------------------

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Why: at EOF the stock reader raises IncompleteReadError, which aiosmtpd's command
        # loop answers with a 500 and then reads again; we turn it into _InputExhausted.
        super()._cb_client_connected(reader, writer)
        self._reader: _ClientInput = _ClientInput(reader, self._on_input)  # type: ignore[assignment]
        self._reader.before_waiting = self._release_held
        if self._reading_stopped:  # the server stopped before this connection arrived
            self._stop_reading()

    def eof_received(self) -> bool:
        # Why: stock cancels the session on EOF, dropping whatever is still buffered. The
        # portal writes its whole transaction at once and hangs up on the first byte of the
        # 220, so its order is always still buffered here. We only mark the end of input; the
        # session drains the buffer, then closes. The socket stays half-open meanwhile, so a
        # client that merely shut down its sending side (netcat) still gets its replies.
        self._input_ended = True
        self._eof_received = True
        log.debug("client finished sending", peer=self._peer())
        return bool(asyncio.StreamReaderProtocol.eof_received(self))

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return  # refused at connect: no session was started
        if self._gate is not None and self._gate_peer is not None:
            self._gate.release(self._gate_peer)
        self._gate = None  # released once, whatever path the session takes
        if error is None and not self._input_ended:
            # We closed it ourselves (QUIT, too many bad commands): stock behaviour.
            super().connection_lost(error)
            return
        # Why: on a reset (the portal closing with our 220 unread, or SO_LINGER 0) stock
        # cancels the session and the reader raises the reset, losing the transactions that
        # were already received. We first take in what the kernel still holds, then give the
        # reader a plain EOF so its buffer stays readable, and let the session drain it;
        # replies are dropped by `push`.
        if error is not None and not self._eof_received and not self._reading_stopped:
            self._read_what_the_kernel_still_holds()
        self._input_ended = True
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        log.debug("connection lost", peer=self._peer(), error=str(error) if error else None)
        asyncio.StreamReaderProtocol.connection_lost(self, None)

    def _read_what_the_kernel_still_holds(self) -> None:
        """Move bytes still queued in the socket into the reader before asyncio closes it.

        After a reset the kernel keeps the data it had received readable until the socket is
        closed; but when a reply's write fails first (the reset arrived while reading was
        paused or not yet due), asyncio closes the socket with those bytes unread. The socket
        is still open while connection_lost runs.
        """
        transport_socket = self.transport.get_extra_info("socket") if self.transport else None
        if transport_socket is None:
            return
        with transport_socket.dup() as sock:
            sock.setblocking(False)
            while True:
                try:
                    chunk = sock.recv(_KERNEL_DRAIN_CHUNK)
                except OSError:  # nothing more (EAGAIN) or the reset itself
                    return
                if not chunk:
                    return
                self._reader.feed_data(chunk)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # Stock calls this with no duration on connect and after each command received.
        if duration is None:
            self._awaiting_command = False
        super()._reset_timeout(duration)

    def _timeout_cb(self) -> None:
        # Why: stock closes and cancels the session; we end the input instead, so a transaction
        # an idle client left half-sent reaches handle_INCOMPLETE like one cut by EOF.
        if self._awaiting_command:
            self._say_greeting_timeout()
        self._input_ended = True
        self._reader.feed_eof()
        super()._timeout_cb()

    def _say_greeting_timeout(self) -> None:
        """421 to a client that sent no command within the greeting timeout; counted."""
        seconds = self._greeting_timeout
        metrics.refused_kind("timeout")
        if self._gate is not None:
            self._gate.timed_out(self._gate_peer, seconds)
        if self.transport is not None and not self.transport.is_closing():
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(
                f"421 4.4.2 {self.hostname} no command within {seconds:g} s, closing\r\n"
                .encode("ascii", "replace")
            )

    async def _handle_client(self) -> None:
        # Why: stock runs until cancelled by EOF; ours runs until the input is used up, then
        # reports an unfinished transaction and closes the connection.
        try:
            await super()._handle_client()
        except _InputExhausted:
            await self._report_incomplete_transaction()
        except ConnectionError as error:  # stock re-raises these after logging them
            log.info("connection error during session", peer=self._peer(), error=str(error))
        finally:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            self._release_held()
            if self.transport is not None:
                self.transport.close()

    async def _report_incomplete_transaction(self) -> None:
        envelope = self.envelope
        if envelope is None or not envelope.mail_from:
            return
        log.info(
            "client input ended mid-transaction; not delivered",
            peer=self._peer(),
            mail_from=envelope.mail_from,
            data_bytes=None if envelope.content is None else len(envelope.content),
        )
        try:
            await self._call_handler_hook("INCOMPLETE")
        except Exception:
            log.exception("handle_INCOMPLETE failed", peer=self._peer())

    async def push(self, status: str | bytes) -> None:
        # Why: the portal never reads past the first byte of the 220 and the peer may be gone
        # by the time a reply is ready. Stock then raises out of the session (cancelling the
        # handler's work) or lets asyncio log "socket.send() raised exception". Replies to a
        # departed client are dropped quietly; the work behind them has been done.
        # And: stock sends every reply at once, one send() each (13 a CRLF transaction, each
        # waking the client). In an EHLO session, a positive reply is held back while the
        # client has already sent more (pipelined commands, RFC 2920 section 3.1) and goes
        # out with the next reply that finds no input waiting, or before the session waits
        # for input, as Postfix's smtpd does; only 250 and 354 are held (never the greeting,
        # an error, or a reply that closes the session). Not in the portal's HELO sessions:
        # it hangs up on the greeting, and the first reply written after that is what ends
        # the connection (and frees its place under the per-client caps) at once.
        if self.transport is None or self.transport.is_closing():
            log.debug("reply not sent: client gone", peer=self._peer(), reply=_text(status))
            self._held.clear()
            return
        reply = status if isinstance(status, bytes) else status.encode(
            "utf-8" if self.enable_SMTPUTF8 else "ascii"
        )
        if reply[:3] in (b"250", b"354") and self._pipelining() and self._holds_more():
            self._held += reply + b"\r\n"
            return
        if self._held:
            reply = bytes(self._held) + reply
            self._held.clear()
        try:
            await super().push(reply)
        except ConnectionError as error:
            log.debug(
                "reply not sent: client gone",
                peer=self._peer(),
                reply=_text(status),
                error=str(error),
            )

    def _pipelining(self) -> bool:
        return self.session is not None and bool(self.session.extended_smtp)

    def _holds_more(self) -> bool:
        reader = getattr(self, "_reader", None)
        return isinstance(reader, _ClientInput) and reader.holds_more()

    def _release_held(self) -> None:
        """Sends the replies still held back (the session ends)."""
        held, self._held = bytes(self._held), bytearray()
        if held and self.transport is not None and not self.transport.is_closing():
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(held)

    # --- commands -----------------------------------------------------------------------

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        # Why: the old admin tool pipes MAIL FROM straight into netcat, with no HELO at all,
        # and the Postfix it talked to accepted that. Stock answers "503 send HELO first".
        return False

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        # Why: stock handles pipelined commands (it reads them one at a time from the buffer)
        # but never advertises PIPELINING (RFC 2920), so relays such as Postfix wait for each
        # reply. We advertise it. No STARTTLS/AUTH here, and no handle_EHLO hook.
        if not hostname:
            await self.push("501 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        keywords = ["PIPELINING", "8BITMIME"]
        mail_room = 0
        if self.data_size_limit:
            keywords.append(f"SIZE {self.data_size_limit}")
            mail_room += _MAIL_SIZE_PARAMETER_ROOM
        if self.enable_SMTPUTF8:
            keywords.append("SMTPUTF8")
            mail_room += _MAIL_SMTPUTF8_PARAMETER_ROOM
        self.command_size_limits["MAIL"] = self.command_size_limit + mail_room
        keywords.append("HELP")
        lines = [self.hostname, *keywords]
        # One reply of several lines: one send, not one per line.
        await self.push("\r\n".join(f"250-{line}" for line in lines[:-1]) + f"\r\n250 {lines[-1]}")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        # Why: stock reads DATA lines only up to CRLF, so the portal's and netcat's bare-LF
        # messages never end; its 552 does not name the limit and nobody hears of the refusal.
        # Here a line ends at LF (CRLF included, kept as received), `.` ends the message on
        # either ending, dots are unstuffed on both, and an oversize message is read to its
        # end (so the session stays in step), reported to handle_OVERSIZE and refused with 552.
        # Lines longer than 1000 bytes are accepted (as Postfix does); only the size counts.
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        message = await self._receive_message()
        try:
            content = message.content()
            if content is None:
                await self._refuse_oversize(message.size)
                return
            self.envelope.content = content
            self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
        finally:
            self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _receive_message(self) -> _MessageBuffer:
        """Read DATA up to the `.` line; at end of input keep what came and re-raise.

        A session whose commands ended in CRLF is held to CRLF: there, lines end only at
        CRLF and only CRLF . CRLF ends the message, so a bare-LF `.` line cannot end one mail
        and start another inside it (SMTP smuggling); such a line is kept as data and the
        message is flagged (`envelope.bare_lf_end`). Bare-LF sessions (the portal's, the admin
        tool's) end at LF . LF as before.
        """
        message = _MessageBuffer(self.data_size_limit)
        strict = self._reader.crlf
        line_end = b"\r\n" if strict else b"\n"
        terminators = (b".\r\n",) if strict else _DATA_TERMINATORS
        at_line_start = after_lf = True
        after_cr = False
        assert self.envelope is not None
        self.envelope.bare_lf_end = False
        self._reader.in_data = True
        try:
            while True:
                try:
                    piece = await self._read_data_piece()
                except _InputExhausted as end:
                    message.add(_unstuff(end.partial) if at_line_start else end.partial)
                    self.envelope.content = message.content()
                    raise
                if at_line_start and piece in terminators:
                    return message
                if after_lf and piece in _DATA_TERMINATORS:
                    self.envelope.bare_lf_end = True  # a `.` line only bare LF delimits
                message.add(_unstuff(piece) if at_line_start else piece)
                # A line longer than the reader's limit comes in pieces, and a CRLF may be
                # split between two of them.
                at_line_start = piece.endswith(line_end) or (
                    strict and piece == b"\n" and after_cr
                )
                after_lf = piece.endswith(b"\n")
                after_cr = piece.endswith(b"\r")
        finally:
            self._reader.in_data = False

    async def _read_data_piece(self) -> bytes:
        """One DATA line with its ending, or a piece of a line longer than the reader's limit."""
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as overrun:
            return await self._reader.read(overrun.consumed)

    async def _refuse_oversize(self, size: int) -> None:
        log.info(
            "message over the size limit refused",
            peer=self._peer(),
            size=size,
            limit=self.data_size_limit,
        )
        try:
            await self._call_handler_hook("OVERSIZE", size)
        except Exception:
            log.exception("handle_OVERSIZE failed", peer=self._peer())
        await self.push(
            f"552 5.3.4 message of {size} bytes exceeds the {self.data_size_limit}-byte limit"
        )

    def end_input(self) -> None:
        """Reads no more from the client (shutdown): commands already received are still
        answered, a transaction already sent is still delivered, then the session ends.
        An idle session therefore ends at once."""
        if self._input_ended:
            return
        self._input_ended = True
        self._reading_stopped = True
        if not isinstance(getattr(self, "_reader", None), _ClientInput):
            return  # not connected yet: `_cb_client_connected` ends it on arrival
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
        self._reader.feed_eof()

    @property
    def live(self) -> bool:
        task = self._handler_coroutine
        return task is not None and not task.done()

    @property
    def session_task(self) -> asyncio.Task[None] | None:
        """The task serving this connection (None before the connection is made)."""
        return self._handler_coroutine

    def _peer(self) -> Any:
        return self.session.peer if self.session is not None else None


def _unstuff(line: bytes) -> bytes:
    """Undo dot-stuffing (RFC 5321 4.5.2): a leading dot was doubled by the client."""
    return line[1:] if line.startswith(b".") else line


def _text(status: str | bytes) -> str:
    return status if isinstance(status, str) else status.decode("utf-8", "replace")


class SessionFactory:
    """Protocol factory for `loop.create_server`: one `OrderSMTP` per connection.

    It remembers the sessions it made so that a shutdown can let them finish: a session may
    still be working through transactions a departed client left in the buffer, and
    Python 3.11's `Server.wait_closed()` does not wait for sessions.
    """

    def __init__(self, handler: Any, **session_options: Any) -> None:
        self._handler = handler
        self._session_options = session_options
        self._sessions: weakref.WeakSet[OrderSMTP] = weakref.WeakSet()

    def __call__(self) -> OrderSMTP:
        session = OrderSMTP(self._handler, loop=asyncio.get_running_loop(), **self._session_options)
        self._sessions.add(session)
        metrics.session_opened()
        return session

    def update(self, **session_options: Any) -> None:
        """Options for sessions from now on (a reload); live sessions keep theirs."""
        self._session_options.update(session_options)

    def live(self) -> int:
        """Sessions still being served."""
        return sum(1 for session in self._sessions if session.live)

    async def wait_finished(self, grace: float) -> int:
        """Ends every session's input, waits up to `grace` seconds for them to finish what
        was already received; returns how many are left."""
        for session in list(self._sessions):
            session.end_input()
        running = {task for session in self._sessions if (task := session.session_task)}
        running = {task for task in running if not task.done()}
        if running:
            await asyncio.wait(running, timeout=grace)
        return sum(not task.done() for task in running)


def create_server_factory(
    handler: Any,
    *,
    data_size_limit: int,
    hostname: str | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECONDS,
    greeting_timeout: float = DEFAULT_GREETING_TIMEOUT_SECONDS,
    enable_smtputf8: bool = True,
    gate: ConnectionGate | None = None,
    on_input: Callable[[], None] | None = None,
) -> SessionFactory:
    """A protocol factory for `loop.create_server`: one `OrderSMTP` per connection.

    `data_size_limit` is the largest message (DATA after unstuffing) accepted, in bytes;
    `hostname` defaults to this machine's FQDN (looked up once, here); after `idle_timeout`
    seconds without a command the session ends (a transaction left open is reported), and
    after `greeting_timeout` seconds (at most `idle_timeout`) if no command came at all,
    with a 421; `gate`, if given, admits or refuses each connection before its session starts;
    `on_input`, if given, is called for every line a session reads.
    """
    if isinstance(data_size_limit, bool) or not isinstance(data_size_limit, int):
        raise TypeError(f"data_size_limit must be an int, got {data_size_limit!r}")
    if data_size_limit < 1:
        raise ValueError(f"data_size_limit must be at least 1 byte, got {data_size_limit}")
    if idle_timeout <= 0:
        raise ValueError(f"idle_timeout must be positive, got {idle_timeout}")
    if greeting_timeout <= 0:
        raise ValueError(f"greeting_timeout must be positive, got {greeting_timeout}")
    return SessionFactory(
        handler,
        data_size_limit=data_size_limit,
        hostname=hostname or socket.getfqdn(),
        ident="wodmail",
        timeout=idle_timeout,
        greeting_timeout=greeting_timeout,
        enable_SMTPUTF8=enable_smtputf8,
        gate=gate,
        on_input=on_input,
    )


async def start_server(
    handler: Any,
    host: str,
    port: int,
    *,
    data_size_limit: int,
    hostname: str | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECONDS,
    greeting_timeout: float = DEFAULT_GREETING_TIMEOUT_SECONDS,
    enable_smtputf8: bool = True,
) -> asyncio.base_events.Server:
    """Listen on host:port (port 0: an ephemeral port, see `server.sockets`).

    To let live sessions finish at shutdown, build the factory with `create_server_factory`
    and call `loop.create_server` yourself, then `factory.wait_finished(grace)`.
    """
    factory = create_server_factory(
        handler,
        data_size_limit=data_size_limit,
        hostname=hostname,
        idle_timeout=idle_timeout,
        greeting_timeout=greeting_timeout,
        enable_smtputf8=enable_smtputf8,
    )
    return await asyncio.get_running_loop().create_server(factory, host, port)


@functools.cache
def _hook_names(cls: type, prefixes: tuple[str, ...]) -> list[str]:
    return [name for name in dir(cls) if name.startswith(prefixes)]
