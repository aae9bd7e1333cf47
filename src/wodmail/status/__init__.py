"""What the daemon tells the outside: the status listener, its page, health, systemd.

`listener` serves /healthz, /jobs, /metrics and /, `page` renders /, `health` decides
healthy or not, `systemd` speaks the notify protocol and takes an activated socket.
"""
