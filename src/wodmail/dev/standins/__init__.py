"""Stand-ins for the peers wodmail talks to, over real HTTP on 127.0.0.1.

Used by the tests and by the README demo: `StandinPortal` plays the portal's API-DB and
`StandinHub` plays JupyterHub, each in a background thread, with a call log and failure
injection (`set_down`, `fail_next`, `set_delay`).
"""

from wodmail.dev.standins._base import RecordedCall
from wodmail.dev.standins.hub import StandinHub
from wodmail.dev.standins.portal import StandinPortal, seed_example

__all__ = ["RecordedCall", "StandinHub", "StandinPortal", "seed_example"]
