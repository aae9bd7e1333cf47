"""Re-creations of wod-backend's stock appliance scripts, as test fixtures.

These are NOT copies of wod-backend's files: each constant below is our own re-creation of
one upstream Jinja template (`scripts/<name>.sh.j2` in wod-backend), written to behave as
the script behaves once the installer has rendered it: the same commands in the same
order, against the same places, with the same defects kept on purpose (the password in a
command line, `set -x`, one ssh connection per command, host key checking off, v1
container names). The differential tests (tests/appliances/test_stock_vs_module.py) and
bench/appliance_orders.py run them through `hooks.use_scripts` and compare what they leave with
what the handler modules leave.

`write_stock_scripts(folder, settings)` renders them into `folder` (the `scripts.public`
of a backend), as the installer rendered `{{ WODSCRIPTDIR }}`, `{{ WODSTUDDIR }}`,
`{{ WODSCRIPTPRIVDIR }}`, `{{ NOCHECKSSH }}` (`-o StrictHostKeyChecking=no -o
UserKnownHostsFile=/dev/null`, wod-backend's group_vars/all.yml) and the hostvars the
container workshops read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

NOCHECKSSH = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"

# functions.sh: only the helpers the re-created scripts call. Re-creates the part of
# wod-backend's functions.sh.j2 they use: `set -e` for whoever sources it (so the create
# scripts stop at their first failing command), the private functions.sh sourced when
# present, and the range lookup in the API-DB with procmail-action.sh's $accessToken.
FUNCTIONS = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's functions.sh: the helpers the appliance
# scripts use. Sourcing it turns on `set -e`, as the stock file does.
set -e

if [ -f {WODSCRIPTPRIVDIR}/functions.sh ]; then
	source {WODSCRIPTPRIVDIR}/functions.sh
fi

# The first student id of the range booked for workshop id $1, as the API-DB says.
wod_get_range_min() {{
	ret=`curl $WODCURLOPT -s --header "x-access-token:$accessToken" \\
		--header "Content-Type: application/json" "$WODAPIDBEXTURL/workshops/$1" \\
		| jq -r '.range[0]'`
	echo "$ret"
}}

# The last one.
wod_get_range_max() {{
	ret=`curl $WODCURLOPT -s --header "x-access-token:$accessToken" \\
		--header "Content-Type: application/json" "$WODAPIDBEXTURL/workshops/$1" \\
		| jq -r '.range[1]'`
	echo "$ret"
}}
"""

# create-appliance.sh: the student's account on the appliance. The key travels through a
# scratch folder /tmp/app.PID on both sides; every remote command is an ssh of its own,
# with WODUSER's ssh defaults (no NOCHECKSSH here: the installer's ~/.ssh/config decides);
# the password is echoed into chpasswd inside the remote command line.
CREATE_APPLIANCE = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's create-appliance.sh.
set -x

# The student's backend public key, into a scratch folder WODUSER owns
TMPDIR=/tmp/app.$$
sudo mkdir -p $TMPDIR
sudo cp {WODSTUDDIR}/student$stdid/.ssh/id_rsa.pub $TMPDIR
sudo chown -R $USER $TMPDIR

if [ _"$WODRTARGET" = _"" ]; then
	echo "no WODRTARGET: nowhere to create the account"
	exit -1
fi
ssh $WODRTARGET mkdir -p $TMPDIR
scp $TMPDIR/id_rsa.pub $WODRTARGET:$TMPDIR/
HOMEDIR=`ssh $WODRTARGET getent passwd student$stdid | cut -d: -f6`
if [ _"$HOMEDIR" != _"" ]; then
	# LDAP installations keep the password in the directory
	[ -z ${{WODLDAPSETUP+x}} ] && ssh $WODRTARGET "echo student$stdid:$randompw | sudo chpasswd"
	# Empty the home and start again from the appliance's skeleton, as the student
	cat > $TMPDIR/preventive-cleanup << EOF
#!/bin/bash
rm -rf $HOMEDIR/.??* $HOMEDIR/*
rsync -av /etc/skel/ $HOMEDIR/
EOF
	scp $TMPDIR/preventive-cleanup $WODRTARGET:$TMPDIR/
	ssh $WODRTARGET chmod 755 $TMPDIR/preventive-cleanup
	ssh $WODRTARGET sudo su - student$stdid -c $TMPDIR/preventive-cleanup
	# The backend key is the only one that opens the account
	ssh $WODRTARGET sudo install -d -m 0700 -o student$stdid -g student$stdid $HOMEDIR/.ssh
	ssh $WODRTARGET sudo install -m 0600 -o student$stdid -g student$stdid \\
		$TMPDIR/id_rsa.pub $HOMEDIR/.ssh/authorized_keys
	EXITVAL=0
else
	echo "the appliance $WODRTARGET has no student$stdid (workshop $w)"
	EXITVAL=-1
fi

ssh $WODRTARGET rm -rf $TMPDIR
rm -rf $TMPDIR
exit $EXITVAL
"""

# reset-appliance.sh: the previous participant loses the key and the password.
RESET_APPLIANCE = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's reset-appliance.sh.
set -x

if [ _"$WODRTARGET" = _"" ]; then
	echo "no WODRTARGET: nowhere to reset the account"
	exit -1
fi
HOMEDIR=`ssh $WODRTARGET getent passwd student$stdid | cut -d: -f6`
if [ _"$HOMEDIR" != _"" ]; then
	ssh -q $WODRTARGET sudo rm -rf $HOMEDIR/.ssh
	[ -z ${{WODLDAPSETUP+x}} ] && ssh -q $WODRTARGET "echo student$stdid:$randompw | sudo chpasswd"
	EXITVAL=0
else
	echo "the appliance $WODRTARGET has no student$stdid (workshop $w)"
	EXITVAL=-1
fi

exit $EXITVAL
"""

# create-WKSHP-Ansible101.sh: reset first (so the .ssh made next survives), the account,
# then an ssh config turning host key checking off, on the backend and on the appliance, a
# self-authorized key on the backend, and the web login with the password in argv (-b).
CREATE_ANSIBLE101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's create-WKSHP-Ansible101.sh.
set -x

source {WODSCRIPTDIR}/functions.sh

# What the previous participant left goes first: the .ssh made below must stay
{WODSCRIPTDIR}/reset-$ws.sh
{WODSCRIPTDIR}/create-appliance.sh

NAME=ansiblelab
TMPDIR=/tmp/$NAME.$stdid
mkdir -p $TMPDIR

echo wid=$wid
WODAPPMIN=`wod_get_range_min $wid`
echo stdid=$stdid
echo WODAPPMIN=$WODAPPMIN

# No host key questions for the student's ssh, here and on the appliance
cat > $TMPDIR/config << EOF
Host *
    StrictHostKeyChecking no
EOF
sudo install -m 0600 -o student$stdid -g student$stdid \\
	$TMPDIR/config {WODSTUDDIR}/student$stdid/.ssh/
# ssh to localhost with the student's own key
sudo install -m 0600 -o student$stdid -g student$stdid \\
	{WODSTUDDIR}/student$stdid/.ssh/id_rsa.pub {WODSTUDDIR}/student$stdid/.ssh/authorized_keys

ssh -q {NOCHECKSSH} $WODRTARGET mkdir -p $TMPDIR
scp -q {NOCHECKSSH} $TMPDIR/config $WODRTARGET:$TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET sudo install -m 0600 -o student$stdid -g student$stdid \\
	$TMPDIR/config {WODSTUDDIR}/student$stdid/.ssh/
ssh -q {NOCHECKSSH} $WODRTARGET sudo htpasswd -b /etc/httpd/conf/htpasswd student$stdid $randompw

rm -rf $TMPDIR
"""

# reset-WKSHP-Ansible101.sh: the account reset, then the home emptied as the student. The
# web login (htpasswd) keeps the previous participant's password.
RESET_ANSIBLE101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's reset-WKSHP-Ansible101.sh.
set -x

{WODSCRIPTDIR}/reset-appliance.sh

# Everything in the home, dot files too
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\
	\\'rm -rf {WODSTUDDIR}/student$stdid/.??* {WODSTUDDIR}/student$stdid/*\\'

exit 0
"""

# StackStorm101: the account, then the st2 login (this one already read the password on
# stdin, though `echo` puts it in the remote shell's command line).
CREATE_STACKSTORM101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's create-WKSHP-StackStorm101.sh.
set -x

{WODSCRIPTDIR}/create-appliance.sh
ssh $WODRTARGET "echo $randompw | sudo htpasswd -i /etc/st2/htpasswd student$stdid"
"""

RESET_STACKSTORM101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's reset-WKSHP-StackStorm101.sh.
set -x

{WODSCRIPTDIR}/reset-appliance.sh

# The st2 login needs the new password too
ssh $WODRTARGET "echo $randompw | sudo htpasswd -i /etc/st2/htpasswd student$stdid"
"""

SCRIPTS = {
    "functions.sh": FUNCTIONS,
    "create-appliance.sh": CREATE_APPLIANCE,
    "reset-appliance.sh": RESET_APPLIANCE,
    "create-WKSHP-Ansible101.sh": CREATE_ANSIBLE101,
    "reset-WKSHP-Ansible101.sh": RESET_ANSIBLE101,
    "create-WKSHP-StackStorm101.sh": CREATE_STACKSTORM101,
    "reset-WKSHP-StackStorm101.sh": RESET_STACKSTORM101,
}


@dataclass(frozen=True)
class StockSettings:
    """What the installer substituted into the templates."""

    students_dir: str
    """WODSTUDDIR: the students' homes, on the backend and on the appliances alike."""
    private_scripts: str = "/nonexistent/wod-private/scripts"
    """WODSCRIPTPRIVDIR."""
    hostvars: Mapping[str, str | int] = field(default_factory=dict)
    """`hostvars[inventory_hostname][KEY]` of the container workshops (base ports)."""


def render(template: str, folder: Path, settings: StockSettings) -> str:
    values = {"WODSCRIPTDIR": str(folder), "WODSTUDDIR": settings.students_dir,
              "WODSCRIPTPRIVDIR": settings.private_scripts, "NOCHECKSSH": NOCHECKSSH,
              **{_placeholder(key): value for key, value in settings.hostvars.items()}}
    return template.format(**values)


def write_stock_scripts(folder: Path, settings: StockSettings) -> Path:
    """The rendered scripts in `folder` (mode 0755 each, as the installer leaves them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, template in SCRIPTS.items():
        path = folder / name
        path.write_text(render(template, folder, settings))
        path.chmod(0o755)
    return folder


def _placeholder(key: str) -> str:
    """`SSHPORT-WKSHP-Docker101` -> the format field `SSHPORT_WKSHP_Docker101`."""
    return key.replace("-", "_")
