"""The journal: the durable record of every order, its attempts, steps and result (SQLite).

`store` opens and writes it (a 250 goes out only after its commit), `schema` holds the
tables and their migrations, `jobs` is the job record, `attempts` the runs of one order,
`maintenance` the admin commands (retry, cancel, prune).
"""
