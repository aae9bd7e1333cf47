"""Who wodmail logs in to appliances as, and with which key.

`appliances.user`, else `accounts.admin_user` (WODUSER, the account the stock scripts ran
ssh as); `appliances.key`, else that user's `~/.ssh/id_ed25519`, else `~/.ssh/id_rsa` (its
home read from accounts.root's etc/passwd, as for every account wodmail names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wodmail.config import Config
from wodmail.errors import ConfigurationError, WodmailError
from wodmail.userdb import UserDb

KEY_NAMES = ("id_ed25519", "id_rsa")


@dataclass(frozen=True)
class Login:
    user: str
    key: Path


def resolve_login(config: Config) -> Login:
    """The user and key in force; ConfigurationError saying what to set when there is none."""
    settings = config.appliances
    user = settings.user or config.accounts.admin_user
    if not user:
        raise ConfigurationError(
            "appliances.user is not set and neither is accounts.admin_user (WODUSER): "
            "wodmail does not know whom to log in to appliances as")
    if settings.key is not None:
        return Login(user, settings.key)
    try:
        home = UserDb(config.accounts.root).user(user).home
    except WodmailError as exc:
        raise ConfigurationError(
            f"appliances.key is not set and the home of {user} is unknown: {exc}") from None
    for name in KEY_NAMES:
        if (home / ".ssh" / name).is_file():
            return Login(user, home / ".ssh" / name)
    raise ConfigurationError(
        f"appliances.key is not set and {user} has no {' or '.join(KEY_NAMES)} in "
        f"{home / '.ssh'}")
