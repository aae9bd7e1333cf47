"""Ansible-compatible templating of workshop files.

`renderer` renders text and trees as Ansible's template module does, `filters` holds
Ansible's filters and tests, `varsfiles` reads variable files (with `!unsafe` and
`!vault`), `vault` decrypts Ansible Vault data.
"""
