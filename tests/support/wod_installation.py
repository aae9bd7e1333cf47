"""A WoD backend installation tree of our own, shaped as wod-install's installer leaves it.

Everything lives under one temp root (`<root>/etc/wod.sh`, `<root>/home/wodadmin/...`):

- `etc/wod.sh`: values baked in at install time, then lines expanded when sourced
  (`$WODROOTDIR/wod-backend` ...), the `WODPRIVINV` test, `WODSTUDDIR`, then the saved
  `ansible-playbook` options WODANSPRIVOPT / WODANSPLAYOPT and WODUSERMAX;
- `etc/wod.yml` (WODUSER, WODSENDER) and `etc/passwd` (the WoD user's home);
- wod-backend: `ansible/inventory` (`[production]` + the backend FQDN, connection local),
  `ansible/group_vars/all.yml` with a fact-based value, the public `production/` vars dir;
- wod-install: `ansible/group_vars/all.yml` (student range, BRANDING*, SURVEYURL);
- wod-private: `ansible/inventory` (another group, another host), `group_vars/all.yml`,
  `group_vars/production`, `generated/production` (as the installer generates it),
  `vault_secret`, `scripts/wod-private.sh` (API-DB credentials).

Fixture files are our own, written from what the installer does, not copies of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUP = "production"
USER = "wodadmin"
BACKEND_FQDN = "be.wod.example.org"
VAULT_PASSWORD = "Vault-Pa55word!"
PORTAL_PASSWORD = "moderator-secret-123"
HUB_TOKEN = "hubtoken0123456789abcdef"


@dataclass(frozen=True)
class Tree:
    root: Path
    home: Path
    wod_sh: Path
    wod_yml: Path
    backend: Path
    install: Path
    private: Path
    notebooks: Path
    students: Path

    @property
    def ansible(self) -> Path:
        return self.backend / "ansible"

    @property
    def private_ansible(self) -> Path:
        return self.private / "ansible"

    @property
    def public_vars(self) -> Path:
        return self.ansible / GROUP

    @property
    def private_vars(self) -> Path:
        return self.private_ansible / GROUP

    @property
    def pass_dir(self) -> Path:
        return self.private_vars / "pass"

    @property
    def vault_secret(self) -> Path:
        return self.private_ansible / "vault_secret"

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A wodmail config using this installation (state and accounts in the root)."""
        data: dict[str, Any] = {
            "listen": {"host": "127.0.0.1"},
            "state_dir": str(self.root / "state"),
            "installation": {"wod_sh": str(self.wod_sh), "wod_yml": str(self.wod_yml)},
            "accounts": {"root": str(self.root), "linux_passwords": False},
        }
        data.update(overrides)
        return data


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def build_installation(root: Path) -> Tree:
    home = root / "home" / USER
    tree = Tree(
        root=root,
        home=home,
        wod_sh=root / "etc" / "wod.sh",
        wod_yml=root / "etc" / "wod.yml",
        backend=home / "wod-backend",
        install=home / "wod-install",
        private=home / "wod-private",
        notebooks=home / "wod-notebooks",
        students=root / "student",
    )
    _write(root / "etc" / "passwd",
           f"root:x:0:0:root:/root:/bin/bash\n{USER}:x:1001:1001::{home}:/bin/bash\n")
    _write(root / "etc" / "group", f"root:x:0:\n{USER}:x:1001:\n")
    tree.students.mkdir(parents=True)
    _write(tree.wod_yml, f"WODUSER: {USER}\nWODSENDER: portal@wod.example.org\n")
    _write_wod_sh(tree)
    _write_backend(tree)
    _write_install(tree)
    _write_private(tree)
    (tree.notebooks).mkdir(parents=True, exist_ok=True)
    (tree.install / "skel").mkdir(parents=True, exist_ok=True)
    return tree


def _write_wod_sh(tree: Tree) -> None:
    root = tree.home
    play = " ".join(
        f"-e {name}={value}"
        for name, value in (
            ("WODGROUP", GROUP), ("WODUSER", USER), ("WODBEDIR", tree.backend),
            ("WODNOBO", tree.notebooks), ("WODPRIVNOBO", tree.private / "notebooks"),
            ("WODPRIVDIR", tree.private), ("WODAPIDBDIR", root / "wod-api-db"),
            ("WODFEDIR", root / "wod-frontend"), ("WODSTUDDIR", tree.students),
            ("WODANSIBLEDIR", tree.ansible), ("WODANSIBLEPRIVDIR", tree.private_ansible),
            ("WODSCRIPTDIR", tree.backend / "scripts"),
            ("WODSCRIPTPRIVDIR", tree.private / "scripts"),
            ("WODSYSDIR", tree.backend / "sys"), ("WODSYSPRIVDIR", tree.private / "sys"),
            ("WODINSDIR", tree.install / "install"),
            ("WODINSSCRIPTDIR", tree.install / "scripts"),
            ("WODINSANSDIR", tree.install / "ansible"), ("WODINSSYSDIR", tree.install / "sys"),
        )
    )
    play += f" -e @{tree.install}/ansible/group_vars/all.yml"
    play += " -e WODLDAPSETUP=0 -e WODAPPMIN=0 -e WODAPPMAX=0"
    private_opt = (
        f" -e @{tree.private_ansible}/group_vars/all.yml"
        f" -e @{tree.private_ansible}/generated/{GROUP}"
        f" -e @{tree.private_ansible}/group_vars/{GROUP}"
    )
    # Three parts, as the installer appends them: values baked in at install time, lines
    # that expand when the file is sourced, then the saved ansible-playbook options.
    baked = f"""# Shell variables for WoD
#
# generated at install time, do not edit
export WODUSER={USER}
export WODTYPE=backend
export WODAPIDBFQDN="api.wod.example.org"
export WODAPIDBPORT="8021"
export WODAPIDBEXTFQDN="api.wod.example.org"
export WODAPIDBEXTPORT="8021"
export WODAPIDBURL=http://api.wod.example.org:8021/api
export WODAPIDBEXTURL=http://api.wod.example.org:8021/api
export WODBEAPIURL=http://{BACKEND_FQDN}:8000
export WODROOTDIR={root}
export WODINSDIR={tree.install}/install
export WODINSANSDIR={tree.install}/ansible
export WODINSSYSDIR={tree.install}/sys
export WODINSSCRIPTDIR={tree.install}/scripts
export WODANSIBLEDIR={tree.ansible}
export WODGROUP={GROUP}
"""
    sourced = """#
# backend part
export WODBEDIR=$WODROOTDIR/wod-backend
# private part, beside the backend
export WODPRIVDIR=$WODROOTDIR/wod-private
export WODANSIBLEPRIVDIR=$WODPRIVDIR/ansible
export WODSCRIPTPRIVDIR=$WODPRIVDIR/scripts
export WODSYSPRIVDIR=$WODPRIVDIR/sys
export WODPRIVNOBO=$WODPRIVDIR/notebooks
WODPRIVINV=""
if [ -f $WODPRIVDIR/ansible/inventory ]; then
    WODPRIVINV="-i $WODPRIVDIR/ansible/inventory"
fi
export WODPRIVINV
export WODAPIDBDIR=$WODROOTDIR/wod-api-db
export WODFEDIR=$WODROOTDIR/wod-frontend
export WODNOBO=$WODROOTDIR/wod-notebooks
export WODSYSDIR=$WODROOTDIR/wod-$WODTYPE/sys
export WODSCRIPTDIR=$WODROOTDIR/wod-$WODTYPE/scripts

export WODSTUDDIR=""" + str(tree.students) + "\n#\n"
    saved = f"""export WODANSPRIVOPT="{private_opt}"
export WODANSPLAYOPT="{play}"
export WODUSERMAX=40
"""
    _write(tree.wod_sh, baked + sourced + saved)


def _write_backend(tree: Tree) -> None:
    _write(tree.ansible / "inventory", f"""\
[{GROUP}]
{BACKEND_FQDN} ansible_connection=local
[{GROUP}:vars]
INIVAR=from-ini
LEVELS=ini
""")
    # Group-level values beat `all`, and the INI ones; host_vars beat them all.
    _write(tree.ansible / "group_vars" / f"{GROUP}.yml", "LEVELS: group\nGROUPONLY: yes\n")
    _write(tree.private / "ansible" / "host_vars" / f"{BACKEND_FQDN}.yml", "HOSTLEVEL: private\n")
    _write(tree.ansible / "group_vars" / "all.yml", f"""\
# backend defaults
UIDBASE: 2000
VAULTPWD: {VAULT_PASSWORD}
JPHUB: /opt/jupyterhub
WODBETOKEN: {HUB_TOKEN}
WODLDAPSRVNAME: ldap.wod.example.org
WODLDAPDMN: dc=wod,dc=example,dc=org
WODLDAPPWD: ldap-secret-42
WODLDAPPORT: "1389"
BRANDING: "from backend group_vars (lost to -e)"
WODBEEXTFQDN: "{{{{ ansible_fqdn }}}}"
JUPYTERFQDN: "{{{{ ansible_fqdn }}}}"
STUDHOMES: "{{{{ ansible_env.HOME }}}}/students-notes"
HTTPPORT-WKSHP-Docker101: 14151
LEVELS: all
""")
    (tree.public_vars).mkdir(parents=True, exist_ok=True)
    (tree.backend / "scripts").mkdir(parents=True, exist_ok=True)
    (tree.backend / "sys").mkdir(parents=True, exist_ok=True)


def _write_install(tree: Tree) -> None:
    _write(tree.install / "ansible" / "group_vars" / "all.yml", """\
WODUSERMIN: 1
WODUSERMAX: 40
BRANDING: "WoD Example"
BRANDINGWOD: "WoD Example Workshops"
BRANDINGURL: "https://wod.example.org"
SURVEYURL: https://survey.wod.example.org/{{ WODGROUP }}
SURVEYCHALURL: TBD
""")
    (tree.install / "install").mkdir(parents=True, exist_ok=True)


def _write_private(tree: Tree) -> None:
    ansible = tree.private_ansible
    _write(ansible / "inventory", "[private]\nprivate-hub.wod.example.org\n")
    _write(ansible / "group_vars" / "all.yml", "WODMONITOR: ops@wod.example.org\n")
    _write(ansible / "group_vars" / GROUP, "IP-WKSHP-Docker101: 10.1.2.3\n")
    _write(ansible / "group_vars" / "private", "IP-WKSHP-Docker101: 10.9.9.9\n")
    _write(ansible / "generated" / GROUP, f"""\
# generated at install time
WODGROUP: {GROUP}
WODBEFQDN: {BACKEND_FQDN}
WODBEEXTFQDN: {BACKEND_FQDN}
WODPOSTPORT: 10031
WODAPIDBEXTURL: http://api.wod.example.org:8021/api
WODBEAPIURL: http://{BACKEND_FQDN}:8000
WODCURLOPT:
#UIDBASE: 2000
WODBASESTDID: 2000
""")
    _write(ansible / "vault_secret", VAULT_PASSWORD + "\n")
    tree.pass_dir.mkdir(parents=True, exist_ok=True)
    _write(tree.private / "scripts" / "wod-private.sh", f"""\
#
# API-DB credentials
export WODAPIDBUSER="moderator"
export WODAPIDBUSERPWD="{PORTAL_PASSWORD}"
export WODAPIDBADMIN="hackshack"
export WODAPIDBADMINPWD="admin-secret"
""")
    (tree.private / "notebooks").mkdir(parents=True, exist_ok=True)
