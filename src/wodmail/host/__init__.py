"""The backend host: Linux accounts, passwords, homes, LDAP, ssh keys, deployed notebooks.

`accounts` sets passwords and rebuilds homes, `passwords` makes them, `ldap` sets them on
the directory, `keypool` makes ssh key pairs ahead of time, `deploy` renders a workshop
into a home, `studentvars` keeps per-student template variables, `convert` turns a
student's notebooks into PDF or Word files as the student (`wodmail-test PDF|WORD`).
"""
