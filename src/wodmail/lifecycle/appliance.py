"""The appliance target of a workshop (WODRTARGET), as the procmail API computed it.

- `multiappliance`: one appliance per student. The base IP is the configuration key
  `IP-<WS>`; student N gets the base's last octet + (N - range min).
- `monoappliance`: one appliance shared by every student: the base IP itself.
- neither: no target.

A base IP still set to the stock placeholder `x.y.z.t`, or anything that is not an IPv4
address, is a configuration error that names the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from wodmail.errors import ConfigurationError

PLACEHOLDER = "x.y.z.t"
LAST_USABLE_OCTET = 254


def base_ip_key(content: str) -> str:
    """The configuration key holding the base IP of workshop folder `content` (WS)."""
    return f"IP-{content}"


def appliance_target(
    *,
    multiappliance: bool,
    monoappliance: bool,
    content: str,
    student: int,
    range_min: int | None,
    lookup: Callable[[str], Any],
) -> str | None:
    """WODRTARGET for `student` on workshop folder `content`, or None without an appliance.

    `lookup(key)` returns the (already template-resolved) value of a configuration variable
    and raises KeyError when it is not set. `multiappliance` wins over `monoappliance`.
    """
    if not (multiappliance or monoappliance):
        return None
    key = base_ip_key(content)
    base = _base_ip(key, lookup)
    if not multiappliance:
        return str(base)
    if range_min is None:
        raise ConfigurationError(
            f"workshop {content} is multiappliance but its record has no student range: "
            f"set the workshop's range in the API-DB (or wod.yml)"
        )
    offset = student - range_min
    if offset < 0:
        raise ConfigurationError(
            f"student{student} is below the range of workshop {content} (min {range_min}): "
            f"no appliance in {key} can serve it"
        )
    octets = base.packed
    last = octets[3] + offset
    if last > LAST_USABLE_OCTET:
        raise ConfigurationError(
            f"{key} = {base}: student{student} (range min {range_min}) would need last octet "
            f"{last}, past {LAST_USABLE_OCTET}; lower the base IP or the workshop's range"
        )
    return str(ipaddress.IPv4Address(bytes((*octets[:3], last))))


def _base_ip(key: str, lookup: Callable[[str], Any]) -> ipaddress.IPv4Address:
    try:
        value = lookup(key)
    except KeyError:
        raise ConfigurationError(
            f"{key} is not set: the workshop has an appliance, so the configuration needs "
            f"its base IP under {key}"
        ) from None
    text = "" if value is None else str(value).strip()
    if text == PLACEHOLDER:
        raise ConfigurationError(
            f"{key} is still the placeholder {PLACEHOLDER}: set it to the appliance's IP"
        )
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigurationError(f"{key} = {text!r} is not an IPv4 address") from None
