"""asyncssh's exceptions as wodmail's errors: what a retry may mend, what an admin must fix."""

from __future__ import annotations

import os

import asyncssh

from wodmail.appliances.hostkeys import HostKeys, Judgement
from wodmail.errors import PeerMisconfigured, PeerUnavailable, WodmailError

# The channel never opened: the kept connection was dead (reset, closed by the peer, EOF).
# The command was not sent, so opening a new connection and trying once more is safe.
DEAD_CONNECTION = (asyncssh.ConnectionLost, BrokenPipeError, ConnectionResetError)


def peer(address: str) -> str:
    return f"appliance {address}"


def dead(exc: BaseException) -> bool:
    """Whether a failure to open a channel says the connection is gone."""
    if isinstance(exc, asyncssh.ChannelOpenError):
        return exc.code == asyncssh.OPEN_CONNECT_FAILED
    return isinstance(exc, DEAD_CONNECTION)


def connect_failure(
    address: str, user: str, exc: BaseException, judged: Judgement, hostkeys: HostKeys,
    timeout: float,
) -> WodmailError:
    """Why a connection could not be opened, as the error the dispatcher acts on."""
    if isinstance(exc, WodmailError):
        return exc
    if judged.verdict in ("changed", "unknown"):
        return hostkeys.refusal(address, judged)
    if isinstance(exc, asyncssh.KeyExchangeFailed) and judged.expected:
        # Offered none of the pinned key types: as much a changed key as another key.
        return hostkeys.refusal(address, judged)
    if isinstance(exc, asyncssh.PermissionDenied):
        return PeerMisconfigured(peer(address), f"refused the ssh login as {user}: "
                                 f"{exc.reason} (is the key in its authorized_keys?)")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return hostkeys.refusal(address, judged)
    if isinstance(exc, TimeoutError):
        return PeerUnavailable(peer(address), f"no ssh connection within {timeout:g} s")
    if isinstance(exc, OSError):
        # asyncio's own text ("Connect call failed (addr, port)") says less than errno's.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return PeerUnavailable(peer(address), f"cannot connect: {reason}")
    if isinstance(exc, asyncssh.DisconnectError):
        return PeerUnavailable(peer(address), f"ssh connection failed: {exc.reason}")
    return PeerUnavailable(peer(address), f"ssh connection failed: {type(exc).__name__}: {exc}")


def channel_failure(address: str, exc: BaseException) -> PeerUnavailable:
    """A channel that could not be opened or a connection lost while a command ran."""
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    return PeerUnavailable(peer(address), f"ssh channel failed: {reason}")
