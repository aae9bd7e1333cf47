"""The error hierarchy of wodmail.

Everything wodmail raises on purpose derives from `WodmailError`. The dispatcher retries
exactly the `TransientError` family (with backoff, up to a deadline); everything else
fails the order at once with the error's message as the reason.

These are also what workshop handler modules may import and raise (`__all__`): raise
`ConfigurationError` for what an admin must fix, `AccountError` for a student's account
or home, `TransientError` (or `PeerUnavailable`) for what a retry may mend; anything else
a handler raises fails the order as `HookFailed` naming the module.

Appliances (`ctx.appliance()`) raise the peer errors: `PeerUnavailable` when the appliance
cannot be reached (retried until the order's deadline), `PeerMisconfigured` when it refuses
the login, its host key changed or sudo asks for a password (fixed by an admin, never
retried), `ApplianceCommandFailed` when a command exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "AccountError",
    "ApplianceCommandFailed",
    "ConfigurationError",
    "HookFailed",
    "PeerError",
    "PeerMisconfigured",
    "PeerRefused",
    "PeerUnavailable",
    "TemplateError",
    "TransientError",
    "WodmailError",
]


class WodmailError(Exception):
    """Base of every error wodmail raises on purpose; its message is meant for an admin."""


class ConfigurationError(WodmailError):
    """The configuration (file, flags, peer credentials or scopes) is wrong; retrying won't help."""


class TransientError(WodmailError):
    """A failure that the same call may not meet again: the dispatcher retries these."""


class PeerError(WodmailError):
    """A peer (the portal's API-DB, JupyterHub, LDAP) did not do what was asked."""

    def __init__(self, peer: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer = peer
        self.status = status


class PeerUnavailable(PeerError, TransientError):
    """Connection refused or reset, timeout, 5xx, expired token: worth another try."""


class PeerRefused(PeerError):
    """The peer answered and said no (a 4xx that a retry will not change)."""


class PeerMisconfigured(PeerRefused, ConfigurationError):
    """The peer refuses our credentials or scopes (bad password, 403): fix the config."""


class ApplianceCommandFailed(PeerRefused):
    """A command on an appliance exited non-zero: `status` is its exit status (negative: the
    signal that ended it; None: it was stopped by wodmail, e.g. past its output cap),
    `output` its stdout then stderr (the last 64 KiB, secrets masked)."""

    def __init__(
        self, appliance: str, command: str, message: str, *, status: int | None, output: str
    ) -> None:
        super().__init__(f"appliance {appliance}", f"{command}: {message}", status=status)
        self.appliance = appliance
        self.command = command
        self.output = output


class AccountError(WodmailError):
    """A student account could not be changed (password, home, keys, processes)."""


class TemplateError(WodmailError):
    """A workshop file could not be rendered; names the file and the variable or line."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = file


class HookFailed(WodmailError):
    """A workshop hook (handler module or legacy script) failed; `output` keeps what it said."""

    def __init__(self, hook: str, message: str, *, output: str = "") -> None:
        super().__init__(f"{hook}: {message}")
        self.hook = hook
        self.message = message
        self.output = output
