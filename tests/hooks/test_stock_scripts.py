"""Stock WoD hook scripts run unchanged: as WODUSER (when wodmail is root) with its HOME and
login environment, with /etc/wod.sh and wod-private.sh sourced and procmail-action.sh's
variables exported (accessToken, WODAPIDBEXTURL, stdid, wid, w ...), so a create script
that sources a functions.sh, asks the API-DB with $accessToken and vaults per-student
variables with ansible-vault sees those variables reach the student's notebook.

Everything is real: an installation tree of our own (tests/support/wod_installation.py), the
stand-in API-DB and hub on loopback, bash, curl, jq and ansible-vault from ansible-core.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from support.e2e import Backend2E
from support.user_ansible import AnsibleForUser, Unavailable
from support.wod_installation import USER, Tree, build_installation
from wodmail import cli
from wodmail.config import parse_config
from wodmail.dev.standins import StandinHub, StandinPortal
from wodmail.journal.jobs import JobState

WS = "WKSHP-Port101"
BASE = 100
HUB_TOKEN = "stock-scripts-hub-token"
ADMIN_UID = 1001  # wodadmin in the tree's etc/passwd
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "jq"))
    or not (VENV_BIN / "ansible-vault").exists(),
    reason="needs bash, curl, jq (scripts/system-deps.sh) and ansible-core (test extra)",
)

FUNCTIONS_SH = """\
#!/bin/bash
# Helpers as stock functions.sh has them: the API-DB at $WODAPIDBEXTURL with $accessToken.
wod_get_range_min() {
	curl -s --header "x-access-token:$accessToken" --header "Content-Type: application/json" \\
		"$WODAPIDBEXTURL/workshops/$1" | jq -r '.range[0]'
}
wod_get_student_name() {
	curl -s -f --header "x-access-token:$accessToken" "$WODAPIDBEXTURL/students/$1" \\
		| jq -r '.username'
}
"""

CREATE_SH = """\
#!/bin/bash
set -e
set -x
source {scripts}/functions.sh
WODAPPMIN=`wod_get_range_min $wid`
httpport=$(($stdid-$WODAPPMIN+14000))
apiname=`wod_get_student_name $(($stdid+{base}))`
if [ ! -d "$WODANSIBLEPRIVDIR/$WODGROUP/pass" ]; then
	mkdir -p "$WODANSIBLEPRIVDIR/$WODGROUP/pass"
fi
ansible-vault encrypt_string --vault-password-file "$WODANSIBLEPRIVDIR/vault_secret" $httpport \\
	--name "'HTTPPORT'" > "$WODANSIBLEPRIVDIR/$WODGROUP/pass/variables_${{w}}_${{stdid}}.yml"
ansible-vault encrypt_string --vault-password-file "$WODANSIBLEPRIVDIR/vault_secret" $apiname \\
	--name "'APINAME'" >> "$WODANSIBLEPRIVDIR/$WODGROUP/pass/variables_${{w}}_${{stdid}}.yml"
set +x
echo "uid=$(id -u) USER=$USER HOME=$HOME profile=${{FROM_PROFILE:-no}} api-user=$WODAPIDBUSER"
echo "order: w=$w ws=$ws wid=$wid stddir=$stddir target=${{WODRTARGET:-none}}"
"""


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _open_up(path: Path) -> None:
    """Let the WoD user enter every folder of the tree (built by root, some 0700)."""
    for folder in (path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())):
        folder.chmod(folder.stat().st_mode | 0o711)


@pytest.fixture(scope="module")
def wod_user_ansible():
    """ansible-core the WoD user can run (support.user_ansible). None when not root:
    scripts then run as ourselves, with our venv."""
    if os.getuid() != 0:
        yield None
        return
    try:
        ansible = AnsibleForUser.make(ADMIN_UID, ADMIN_UID)
    except Unavailable as why:
        pytest.skip(str(why))
    try:
        yield ansible
    finally:
        ansible.close()


def _add_students(tree: Tree, students: range, privileged: bool) -> None:
    passwd, group = tree.root / "etc" / "passwd", tree.root / "etc" / "group"
    for n in students:
        uid = 63000 + n if privileged else os.getuid()
        gid = 63000 + n if privileged else os.getgid()
        with passwd.open("a") as out:
            out.write(f"student{n}:x:{uid}:{gid}::/student/student{n}:/bin/bash\n")
        with group.open("a") as out:
            out.write(f"student{n}:x:{gid}:\n")
        home = tree.students / f"student{n}"
        home.mkdir()
        os.chown(home, uid, gid)


@pytest.fixture
def installation(tmp_path: Path, wod_user_ansible):
    privileged = os.getuid() == 0
    base = tmp_path
    if privileged:
        # The WoD user must reach the tree; pytest keeps resetting its own temp root to 0700
        # (in any concurrent run), so the tree lives in a temp dir of its own.
        base = Path(tempfile.mkdtemp(prefix="wodmail-stock-scripts-"))
        base.chmod(0o711)
    tree = build_installation(base / "inst")
    _add_students(tree, range(1, 6), privileged)
    scripts = tree.backend / "scripts"
    _write(scripts / "functions.sh", FUNCTIONS_SH, 0o755)
    create = _write(scripts / f"create-{WS}.sh",
                    CREATE_SH.format(scripts=scripts, base=BASE), 0o755)
    _write(tree.notebooks / WS / "0-ReadMeFirst.ipynb", (
        '{"cells": [{"cell_type": "markdown", "metadata": {}, "source": '
        '["student{{ STDID }}: port {{ HTTPPORT }} for {{ APINAME }} on {{ WODBEEXTFQDN }}"]}],'
        ' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'))
    # WODUSER's login profile puts ~/bin on PATH, as Debian's default .profile does.
    _write(tree.home / ".profile", 'export FROM_PROFILE=yes\nPATH="$HOME/bin:$PATH"\n')
    if privileged:
        wod_user_ansible.write_ansible_vault(tree.home / "bin")
        _open_up(tree.root)
        os.chown(tree.home, ADMIN_UID, ADMIN_UID)
        for path in (tree.pass_dir, *tree.pass_dir.rglob("*")):
            os.chown(path, ADMIN_UID, ADMIN_UID)
    portal = StandinPortal().start()
    portal.add_workshop(notebook=WS, name="Port 101", range=[3, 5], capacity=3)
    for n in range(1, 6):
        portal.add_student(n + BASE, username=f"student{n}", assigned=True)
        portal.add_customer(n, notebook=WS, studentId=n + BASE)
    hub = StandinHub(HUB_TOKEN, users=[f"student{n}" for n in range(1, 6)]).start()
    data = tree.config(
        # Any free port: the installation's WODPOSTPORT (10031) may be taken by another run.
        listen={"host": "127.0.0.1", "port": 0},
        portal={"url": portal.url, "user": StandinPortal.MODERATOR_USER,
                "password": StandinPortal.MODERATOR_PASSWORD},
        hub={"url": hub.root_url, "token": HUB_TOKEN},
        students={"min": 1, "max": 5, "base_id": BASE},
        accounts={"root": str(tree.root), "linux_passwords": False, "ssh_key_pool": 1},
        allowed_senders=["sender@example.org"],
        dispatch={"retry_base_seconds": 0.05, "retry_max_seconds": 0.5,
                  "retry_deadline_seconds": 20},
    )
    yield tree, data, create, portal
    portal.stop()
    hub.stop()
    if base != tmp_path:
        shutil.rmtree(base, ignore_errors=True)


async def test_a_stock_style_create_script_runs_unchanged(installation, monkeypatch, capsys):
    tree, data, create, portal = installation
    # Not root: the script runs as ourselves, with the daemon's PATH.
    monkeypatch.setenv("PATH", f"{VENV_BIN}:{os.environ.get('PATH', os.defpath)}")
    config = parse_config(data, "wodmail.yml")
    assert config.accounts.admin_user == USER
    wod = await Backend2E(None, config).start()  # type: ignore[arg-type]
    try:
        job = await wod.order("CREATE 4 4 p4@example.com", WS, limit=120)
    finally:
        await wod.stop()
    assert job.state is JobState.DONE, (job.reason, job.result.get("hooks"))

    notebook = (tree.students / "student4" / WS / "0-ReadMeFirst.ipynb").read_text()
    # 4 - range min 3 + 14000, and the API-DB's own answer to a call with $accessToken.
    assert "student4: port 14001 for student4 on be.wod.example.org" in notebook
    pass_file = tree.pass_dir / f"variables_{WS}_4.yml"
    assert pass_file.read_text().startswith("'HTTPPORT': !vault |")

    [hook] = job.result["hooks"]
    assert hook["name"] == f"script {create}" and hook["ok"]
    output = hook["output"]
    workshop_id = portal.workshops()[0]["id"]
    assert f"order: w={WS} ws={WS} wid={workshop_id} " in output
    assert f"stddir={tree.students / 'student4'} target=none" in output
    assert "api-user=moderator" in output  # wod-private.sh was sourced
    for token in portal.issued_tokens():
        assert token not in output  # `set -x` showed it; it is masked
    if os.getuid() == 0:
        assert hook["user"] == USER
        assert f"uid={ADMIN_UID} USER={USER} HOME={tree.home} profile=yes " in output
    else:
        assert hook["user"].endswith(f"(wodmail is not root, so not {USER})")
        assert f"uid={os.getuid()} " in output

    # `wodmail show` (text) has the hook, who it ran as, and its output.
    config_file = tree.root / "wodmail.yml"
    import yaml

    config_file.write_text(yaml.safe_dump(data))
    assert cli.main(["show", str(job.id), "--config", str(config_file)]) == 0
    shown = capsys.readouterr().out
    assert f"    - script {create} as {hook['user']}: ok" in shown
    assert f"      | order: w={WS} ws={WS} wid={workshop_id} " in shown


def test_scripts_wodmail_cannot_reach_as_wod_user_fail_in_preflight(installation):
    if os.getuid() != 0:
        pytest.skip("switching to the WoD user needs root")
    tree, data, _, _ = installation
    hidden = tree.root / "hidden"
    hidden.mkdir(mode=0o700)
    script = _write(hidden / f"create-{WS}.sh", "#!/bin/bash\ntrue\n", 0o755)
    data["scripts"] = {"private": str(hidden)}
    config = parse_config(data, "wodmail.yml")
    from wodmail.hooks.phases import Hooks

    hooks = Hooks.from_config(config)
    with pytest.raises(Exception) as caught:
        hooks.preflight(("create",), WS)
    assert str(caught.value) == (
        f"hook script {script}: {USER} (uid {ADMIN_UID}) cannot enter {hidden}"
    )


PRE_TEMPLATING = """\
- name: what HOME/WS holds before the templates are rendered
  ansible.builtin.stat:
    path: "{{ WODSTUDDIR }}/student{{ STDID }}/{{ WORKSHOP }}/{{ item }}"
  loop: [data.csv, 0-ReadMeFirst.ipynb]
  register: before
- name: leave a note with the play's variables
  ansible.builtin.copy:
    dest: "{{ WODSTUDDIR }}/student{{ STDID }}/{{ WORKSHOP }}/pre.txt"
    content: "{{ BRANDING }} {{ CHALLENGE }} {{ HTTPPORT }}
      {{ before.results | map(attribute='stat.exists') | join(' ') }}\\n"
"""

POST_TEMPLATING = """\
- name: the templates are rendered by now
  ansible.builtin.stat:
    path: "{{ WODSTUDDIR }}/student{{ STDID }}/{{ WORKSHOP }}/0-ReadMeFirst.ipynb"
  register: notebook_after
- ansible.builtin.copy:
    dest: "{{ WODSTUDDIR }}/student{{ STDID }}/{{ WORKSHOP }}/post.txt"
    content: "{{ notebook_after.stat.exists }}\\n"
"""


async def test_the_installation_s_own_deploy_parts_are_used(installation, monkeypatch):
    """Private pre/post_templating.yml run through ansible-playbook around the templating,
    with the order's variables (the vaulted HTTPPORT too); wod-generate-pdf.sh and the
    installation's workspace template are delivered."""
    tree, data, _, _ = installation
    monkeypatch.setenv("PATH", f"{VENV_BIN}:{os.environ.get('PATH', os.defpath)}")
    monkeypatch.setenv("ANSIBLE_PYTHON_INTERPRETER", sys.executable)  # not a pyenv shim
    _write(tree.notebooks / WS / "data.csv", "a,b\n")
    _write(tree.private_ansible / "pre_templating.yml", PRE_TEMPLATING)
    _write(tree.private_ansible / "post_templating.yml", POST_TEMPLATING)
    sys_dir = tree.backend / "sys"
    _write(sys_dir / "wod-generate-pdf.sh", "#!/bin/bash\njupyter nbconvert --to pdf *.ipynb\n")
    _write(sys_dir / "lab-b123.jupyterlab-workspace.j2",
           '{"cwd": "{{ WORKSHOP }}", "brand": "{{ BRANDING }}", "student": "{{ STDID }}"}\n')
    config = parse_config(data, "wodmail.yml")
    wod = await Backend2E(None, config).start()  # type: ignore[arg-type]
    try:
        job = await wod.order("CREATE 4 4 p4@example.com", WS, limit=300)
    finally:
        await wod.stop()
    assert job.state is JobState.DONE, (job.reason, job.result["hooks"][-1]["output"])

    home = tree.students / "student4"
    # Plain files were there before the templates, the notebook only after.
    pre = (home / WS / "pre.txt").read_text().rstrip("\n")  # Ansible may drop the newline
    assert pre == f"WoD Example {WS} 14001 True False"
    assert (home / WS / "post.txt").read_text().rstrip("\n") == "True"
    names = [hook["name"] for hook in job.result["hooks"]]
    assert names[1:] == ["ansible-playbook pre_templating.yml",
                         "ansible-playbook post_templating.yml"]
    pdf = home / WS / "wod-generate-pdf.sh"
    # 0750 as delivered (the old playbook's 0755, closed to other users); the admin's ACL
    # (as copy_folder.yml set it) shows in the group bits.
    assert pdf.read_text().startswith("#!/bin/bash") and pdf.stat().st_mode & 0o757 == 0o750
    assert pdf.stat().st_uid == (63004 if os.getuid() == 0 else os.getuid())
    workspace = home / ".jupyter" / "lab" / "workspaces" / "default-37a8.jupyterlab-workspace"
    assert workspace.read_text() == f'{{"cwd": "{WS}", "brand": "WoD Example", "student": "4"}}\n'
