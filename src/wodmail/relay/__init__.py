"""The relay: mail for anyone but the order mailbox, held durably and passed to a smarthost.

`routing`: which mail is an order and which is relayed (the order mailbox, the backend's names).
`outbox`: the durable outbox on disk (SQLite), its states, listing and pruning.
`delivery`: the message as it leaves, and one SMTP session with the smarthost.
`sender`: `Relay`, which queues relayed mail in the outbox and delivers it in the background.
"""
