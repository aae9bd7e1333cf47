"""Socket activation (sd_listen_fds(3)): the listening socket systemd hands over.

With `wodmail.socket`, systemd owns port 10025 and passes it to the daemon as descriptor 3
($LISTEN_FDS, $LISTEN_PID): connections that arrive while wodmail restarts wait in the
socket's backlog instead of being refused.
"""

from __future__ import annotations

import os
import socket

FIRST_FD = 3  # SD_LISTEN_FDS_START


def inherited_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets passed to this process, if any; the variables are then removed so that
    hooks started later do not believe they were passed sockets too."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = env.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not count.isdigit():
        return []
    sockets = []
    for fd in range(FIRST_FD, FIRST_FD + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets
