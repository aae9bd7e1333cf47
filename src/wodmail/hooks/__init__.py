"""TODO: the public handler API."""

from wodmail.hooks.phases import HookContext

__all__ = ["HookContext"]
