"""A WoD installation, read as its own scripts and playbooks read it.

`reader` sources /etc/wod.sh and gathers every variable, `inventory` reads the Ansible
inventories, `facts` computes the Ansible facts templates use, `playbooks` runs the
installation's private pre/post templating task files.
"""
