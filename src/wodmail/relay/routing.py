"""Which mail is an order and which is relayed.

When the portal has no SendGrid key it sends participants' welcome and credentials mails to
the backend's order port, as it sends orders; the old Postfix delivered mail for its own
names (`mydestination`) to procmail and relayed the rest. With `relay.host` set, wodmail does
the same: a mail none of whose recipients is in the order mailbox is relayed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from wodmail.config import Config


def _backend_names(variables: dict[str, Any], key: str) -> list[str]:
    """The host names in WODBEFQDN / WODBEEXTFQDN ("be1.example.org:443:https,be2...")."""
    value = variables.get(key)
    if not isinstance(value, str) or "{" in value:
        return []
    names = (item.split(":")[0].strip().lower().rstrip(".") for item in value.split(","))
    return [name for name in names if name]


def default_order_recipients(variables: dict[str, Any]) -> list[str]:
    """`@` every name the old Postfix delivered locally (its `mydestination`): the backend's
    WODBEFQDN and WODBEEXTFQDN (the portal writes to WODUSER@<the latter's first name>),
    localhost, and this machine's names."""
    names = ["localhost", "localhost.localdomain", socket.gethostname(), socket.getfqdn()]
    names += _backend_names(variables, "WODBEFQDN") + _backend_names(variables, "WODBEEXTFQDN")
    found = [f"@{name.strip().lower().rstrip('.')}" for name in names if name.strip()]
    return list(dict.fromkeys(found))


def relay_hostname(variables: dict[str, Any]) -> str:
    """The name wodmail gives itself to the smarthost (EHLO, Received, Message-ID): the old
    Postfix's `myhostname`, WODBEEXTFQDN, else WODBEFQDN, else this machine's FQDN."""
    names = _backend_names(variables, "WODBEEXTFQDN") + _backend_names(variables, "WODBEFQDN")
    return names[0] if names else socket.getfqdn()


def order_recipients(config: Config, variables: dict[str, Any]) -> list[str]:
    """relay.order_recipients, else the backend's own names (see `default_order_recipients`)."""
    if config.relay.order_recipients is not None:
        return config.relay.order_recipients
    return default_order_recipients(variables)


class OrderMailbox:
    """The recipients whose mail is an order: `user@domain` exactly, or any `@domain`.

    A recipient with no domain at all is local, hence an order recipient (Postfix appended
    its own name to it)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = [entry.strip().lower() for entry in entries]
        self.entries = entries
        self._addresses = {entry for entry in entries if not entry.startswith("@")}
        self._domains = {entry[1:].rstrip(".") for entry in entries if entry.startswith("@")}

    def __contains__(self, recipient: str) -> bool:
        address = recipient.strip().strip("<>").lower()
        local, at, domain = address.rpartition("@")
        if not at:
            return True
        return address in self._addresses or domain.rstrip(".") in self._domains

    def wants(self, recipients: Iterable[str]) -> bool:
        """Is a mail to these recipients an order? Yes if any of them is in the mailbox."""
        return any(recipient in self for recipient in recipients)
