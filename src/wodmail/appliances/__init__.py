"""Appliances: workshop hosts reached over ssh, one kept connection per appliance.

A workshop with `monoappliance` or `multiappliance` has a host of its own (WODRTARGET,
computed by `wodmail.lifecycle.appliance`) where its hooks build containers, set the
student's password and so on. The stock WoD scripts ran `ssh` once per command; here a hook
calls `ctx.appliance()` and gets an `Appliance` over the daemon's `AppliancePool`:

- `connections`: the pool (one kept connection per address, channels capped, idle close,
  a dead connection reopened once), built from the `appliances` config section;
- `hostkeys`: host keys pinned (trust on first use, or an admin's known_hosts file);
- `login`: the account and key wodmail logs in with (WODUSER's by default);
- `port`: `Appliance`, the operations hooks call (run, write_file, read_file, read_tar),
  each recorded for `wodmail show`;
- `probe`: what `wodmail check-config` asks of an appliance.

Errors are wodmail's: `PeerUnavailable` (retried), `PeerMisconfigured` (an admin's to
fix), `ApplianceCommandFailed` (a command exited non-zero).
"""

from wodmail.appliances.connections import AppliancePool
from wodmail.appliances.port import Appliance, ApplianceCall, Completed

__all__ = ["Appliance", "ApplianceCall", "AppliancePool", "Completed"]
