"""The relay: mail for anyone but the order mailbox, held durably and passed to a smarthost.

`outbox` holds the routing rules, the durable outbox and the delivery to the smarthost.
"""
