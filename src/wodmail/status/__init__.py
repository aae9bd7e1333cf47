"""What the daemon tells the outside: the status listener, its page, health, systemd.

`listener` serves /healthz, /jobs, /metrics and / over the capped sockets of `connections`;
`request` reads a request, `access` and `token` decide who may ask, `public` is what an
order shows there, `joblist` pages /jobs, `page` renders /, `health` decides healthy or
not, `systemd` speaks the notify protocol and takes an activated socket. `probe` is the
other side: `wodmail reload --wait` asking a running daemon's `/healthz`.
"""
