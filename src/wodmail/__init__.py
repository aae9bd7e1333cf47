"""wodmail: the Workshops-on-Demand backend's order daemon.

Code map: how an order flows, and where each part lives (one folder per layer; a module
imports only from its own layer or the layers below it, and nothing of the daemon
imports `dev/`)::

    SMTP session ──► parse ──► journal ──► 250           cli: wodmail jobs / show
    intake/smtp      intake/    journal/store             (cli.py)
    intake/gate      parse      journal/schema
    intake/handler   orders.py  journal/jobs
                                    │
                             dispatch/dispatcher ── a lane per student, bounded overall
                             dispatch/steps      ── named, timed, retried steps
                             dispatch/yielding   ── intake first: execution makes way
                                    │
                     lifecycle/verbs: create / cleanup / reset / purge
                     lifecycle/backend: the ports below, built once from the config
          │              │            │             │             │
       host/          host/deploy   hooks/        peers/portal  peers/hub
       accounts       templating/   (handler API, (API-DB)      (JupyterHub)
       ldap, keypool                 scripts)
                                      │
                                    appliances/ (ssh, one kept connection per appliance)

Top level, shared by every layer or entry points:

- `cli` (`wodmail`), `testclient` (`wodmail-test`), `service` (the daemon: intake,
  journal, dispatcher, relay and status in one asyncio process), `configcheck`
  (`wodmail check-config`);
- `config` (wodmail.yml, with defaults read from the installation), `errors`, `logs`,
  `metrics`, `orders` (the `Order` model), `userdb` (etc/passwd and etc/group of a root).

Layers, lowest first: `templating/` (Ansible-compatible rendering, variables files,
vault), `installation/` (an existing WoD installation, read as its scripts read it),
`config`; then the ports `host/`, `peers/`, `appliances/`, `relay/` and the `journal/`;
`hooks/` (which hands appliances to workshop hooks) and `dispatch/`; then `lifecycle/`,
`intake/` and `status/` (listener, page, health, systemd); `service` and the commands on
top. `dev/` (sandbox, demo, stand-ins) is for the demo and the tests.
"""
