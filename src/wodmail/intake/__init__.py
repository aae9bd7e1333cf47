"""Intake: a mail on port 10025 becomes a journaled order (or a recorded refusal).

`smtp` is the SMTP server bent to the real clients, `gate` decides who may connect
(`hostaddrs`: is a client on this host; `sockowner`: which uid opened its socket, asked of
the kernel over `netlink`; `localusers`: the uids allowed), `handler` turns a transaction
into a journaled order, `parse` reads a mail into an `Order` or a `Rejection`, `redact` is
what is kept of mail that is not an order, `bursts` and `loopguard` keep floods to one log
line.
"""
