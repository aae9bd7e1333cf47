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

# One crypt(3) hash the stock container images give every student account (upstream bakes
# in a hash of its own; this one is ours, of another password: what matters is that it is
# the same for every student and every event).
FIXED_HASH = ("$6$wodStock1$Zy3spKBxjNraG7B3tUyQlUO3lxP4xufb4J5W9NrhXO68ml4YjDB8eWW3esHw30Ja8"
              "CZEcS1HVf7iM27j29f0/.")
FIXED_HASH_ESCAPED = FIXED_HASH.replace("$", "\\$")

# create-WKSHP-Spark101.sh: reset, the account, then a compose project built on the
# backend and copied over (`docker compose`, v2 only), a fixed `sleep 5` before the token
# is fetched from the file the container's entrypoint wrote 3 s after starting Jupyter,
# and the token, HTTP and Spark ports vaulted on the backend (the token in ansible-vault's
# command line). The appliance's copy of the project is left behind.
CREATE_SPARK101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's create-WKSHP-Spark101.sh.
set -x

source {WODSCRIPTDIR}/functions.sh

# The previous participant's container and account go first
{WODSCRIPTDIR}/reset-$ws.sh
{WODSCRIPTDIR}/create-appliance.sh

NAME=sparklab
TMPDIR=/tmp/$NAME.$stdid
mkdir -p $TMPDIR

echo wid=$wid
WODAPPMIN=`wod_get_range_min $wid`
echo stdid=$stdid
echo WODAPPMIN=$WODAPPMIN
sparkport=$(($stdid-$WODAPPMIN+{SPARKPORT_WKSHP_Spark101}))
sparkport2=$(($stdid-$WODAPPMIN+{SPARKPORT2_WKSHP_Spark101}))
httpport=$(($stdid-$WODAPPMIN+{HTTPPORT_WKSHP_Spark101}))

# Jupyter in the background; its token lands in the home 3 s later, whatever its state
cat > $TMPDIR/dockerd-entrypoint.sh << EOF
export HTTPPORT
tini -g -- start-notebook.sh &
sleep 3
jupyter lab list | tail -1 | cut -d'=' -f2 | cut -d' ' -f1 > {WODSTUDDIR}/student$stdid/sparktoken
sleep infinity
EOF

cat > $TMPDIR/Dockerfile << EOF
FROM ${{NAME}}:latest
USER root
COPY dockerd-entrypoint.sh /usr/local/bin/
ENTRYPOINT /usr/local/bin/dockerd-entrypoint.sh
RUN mkdir -p {WODSTUDDIR}/student$stdid
RUN useradd student$stdid -u $stdid -g 100 -d {WODSTUDDIR}/student$stdid
RUN chown student$stdid:users {WODSTUDDIR}/student$stdid
# The same password hash in every student's account
RUN perl -pi -e "s|^student$stdid:!:|student$stdid:{FIXED_HASH}:|" /etc/shadow
WORKDIR {WODSTUDDIR}/student$stdid
USER student$stdid
ENV NB_USER student$stdid
ENV NB_UID $stdid
ENV HTTPPORT $httpport
RUN git clone https://github.com/hpe-container-platform-community/Apache-Spark-Tutorials {WODSTUDDIR}/student$stdid/
RUN /opt/conda/bin/jupyter-nbconvert --clear-output --inplace {WODSTUDDIR}/student$stdid/*.ipynb
EOF

cat > $TMPDIR/docker-compose.yml << EOF
version: '3.5'
services:
  $NAME$stdid:
    image: $NAME$stdid
    build: .
    #privileged: true
    ports:
      - "$httpport:8888"
      - "$sparkport:4040"
      - "$sparkport2:4041"
EOF
cat > $TMPDIR/launch-$NAME << EOF
#!/bin/bash
cd $TMPDIR
docker compose up --build -d
EOF

# The project to the appliance, built and started there as the student
ssh -q {NOCHECKSSH} $WODRTARGET mkdir -p $TMPDIR
scp -q {NOCHECKSSH} $TMPDIR/Dockerfile $TMPDIR/docker-compose.yml $TMPDIR/launch-$NAME $TMPDIR/dockerd-entrypoint.sh $WODRTARGET:$TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET chmod 755 $TMPDIR $TMPDIR/dockerd-entrypoint.sh
ssh -q {NOCHECKSSH} $WODRTARGET chmod 644 $TMPDIR/docker-compose.yml $TMPDIR/launch-$NAME $TMPDIR/Dockerfile
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'bash $TMPDIR/launch-$NAME\\'

# The token file, out of the container (found by name, as WODUSER) and back here
container_id=$(ssh -q {NOCHECKSSH} $WODRTARGET docker ps -aqf "name=$NAME$stdid")
# Jupyter needs time to start
sleep 5
ssh -q {NOCHECKSSH} $WODRTARGET "docker cp $container_id:{WODSTUDDIR}/student$stdid/sparktoken $TMPDIR"
scp -q {NOCHECKSSH} $WODRTARGET:$TMPDIR/sparktoken $TMPDIR

# The notebooks' variables, vaulted (this file only: PASSSTU is not needed)
if [ ! -d "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass" ]; then
	mkdir -p "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass"
fi
ansible-vault encrypt_string --vault-password-file "{WODANSIBLEPRIVDIR}/vault_secret" `cat $TMPDIR/sparktoken` --name "'SPARKTOK'" > "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass/variables_${{w}}_${{stdid}}.yml"
ansible-vault encrypt_string --vault-password-file "{WODANSIBLEPRIVDIR}/vault_secret" $httpport --name "'HTTPPORT'" >> "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass/variables_${{w}}_${{stdid}}.yml"
ansible-vault encrypt_string --vault-password-file "{WODANSIBLEPRIVDIR}/vault_secret" $sparkport --name "'SPARKPORT'" >> "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass/variables_${{w}}_${{stdid}}.yml"

# Only the backend's copy goes: the appliance keeps its /tmp/sparklab.N
rm -rf $TMPDIR
"""  # noqa: E501

# cleanup-WKSHP-Spark101.sh hands over to cleanup-container-ratio.sh.
CLEANUP_SPARK101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's cleanup-WKSHP-Spark101.sh.
set -x

export NAME=sparklab
export TMPDIR=/tmp/$NAME.$stdid.ret

{WODSCRIPTDIR}/cleanup-container-ratio.sh
"""

# cleanup-container-ratio.sh: the container's notebooks, by compose v1's container name,
# tarred, copied out and unpacked into the student's workshop folder on the backend, for
# the completion ratio. No `set -e`: every failure is ignored.
CLEANUP_CONTAINER_RATIO = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's cleanup-container-ratio.sh.
set -x

# NAME, TMPDIR and WODRTARGET come from the caller
mkdir -p $TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker exec $NAME${{stdid}}_$NAME${{stdid}}_1 tar cf /tmp/ipynb.tar .\\'
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'mkdir -p $TMPDIR\\'
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker cp $NAME${{stdid}}_$NAME${{stdid}}_1:/tmp/ipynb.tar $TMPDIR\\'
scp -q {NOCHECKSSH} $WODRTARGET:$TMPDIR/ipynb.tar $TMPDIR
chmod 755 $TMPDIR
chmod 644 $TMPDIR/ipynb.tar
sudo su - student$stdid -c "cd {WODSTUDDIR}/student$stdid/$w ; tar xf $TMPDIR/ipynb.tar"
ssh -q {NOCHECKSSH} $WODRTARGET sudo rm -rf $TMPDIR
rm -rf $TMPDIR
exit 0
"""  # noqa: E501

# reset-WKSHP-Spark101.sh: the account reset, then `compose down` through a script written
# here from an unquoted heredoc: `docker --version` runs on the backend when it is written,
# into a variable spelt DOOCKERVER, while the test reads DOCKERVER (empty), so the test
# fails and `docker compose down` (v2) always runs. The image stays.
RESET_SPARK101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's reset-WKSHP-Spark101.sh.
set -x

{WODSCRIPTDIR}/reset-appliance.sh

NAME=sparklab
TMPDIR=/tmp/$NAME.$stdid

# Stop the project; whatever fails here is ignored
mkdir -p $TMPDIR
cat > $TMPDIR/stop-compose << EOF
cd $TMPDIR
DOOCKERVER=`docker --version | awk '{{print $3}}' | cut -d. -f1`
if [ $DOCKERVER -le 20 ]; then
	docker-compose down
else
	docker compose down
fi
EOF

chmod 755 $TMPDIR/stop-compose
ssh -q {NOCHECKSSH} $WODRTARGET sudo mkdir -p $TMPDIR
scp -q {NOCHECKSSH} $TMPDIR/stop-compose $WODRTARGET:$TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'$TMPDIR/stop-compose\\' && /bin/true
ssh -q {NOCHECKSSH} $WODRTARGET sudo rm -rf $TMPDIR
exit 0
"""

# create-WKSHP-Docker101.sh: reset, the account, then the student's lab container
# (privileged, the fixed password hash, passwordless sudo, the backend key authorized),
# published on httpport and sshport -> 22; the backend's ~/.ssh/config replaced by a
# `Host <appliance>` / `Port sshport` entry; HTTPPORT vaulted, appended to the pass file.
CREATE_DOCKER101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's create-WKSHP-Docker101.sh.
set -x

source {WODSCRIPTDIR}/functions.sh

# The previous participant's container and account go first
{WODSCRIPTDIR}/reset-$ws.sh
{WODSCRIPTDIR}/create-appliance.sh

NAME=dockerlab
TMPDIR=/tmp/$NAME.$stdid
mkdir -p $TMPDIR

echo wid=$wid
WODAPPMIN=`wod_get_range_min $wid`
echo stdid=$stdid
echo WODAPPMIN=$WODAPPMIN
sshport=$(($stdid-$WODAPPMIN+{SSHPORT_WKSHP_Docker101}))
httpport=$(($stdid-$WODAPPMIN+{HTTPPORT_WKSHP_Docker101}))

cat > $TMPDIR/Dockerfile << EOF
FROM ${{NAME}}:latest
RUN mkdir -p {WODSTUDDIR}/student$stdid
RUN useradd student$stdid -G docker -d {WODSTUDDIR}/student$stdid
# The same password hash in every student's account
RUN perl -pi -e "s|^student$stdid:!:|student$stdid:{FIXED_HASH}:|" /etc/shadow
RUN echo "student$stdid   ALL=(ALL)       NOPASSWD: ALL" >> /etc/sudoers
WORKDIR {WODSTUDDIR}/student$stdid
RUN mkdir .ssh
RUN chmod 700 .ssh
COPY authorized_keys .ssh
RUN chmod 600 .ssh/authorized_keys
RUN chown -R student$stdid:docker {WODSTUDDIR}/student$stdid
COPY dockerd-entrypoint.sh /usr/local/bin/
ENTRYPOINT /usr/sbin/sshd && /usr/sbin/vsftpd /etc/vsftpd/vsftpd.conf && /usr/local/bin/dockerd-entrypoint.sh
EOF

# The student's ssh reaches the container (the whole file is replaced)
cat > $TMPDIR/config << EOF
Host $WODRTARGET
    Port $sshport
EOF
sudo install -m 0600 -o student$stdid $TMPDIR/config {WODSTUDDIR}/student$stdid/.ssh/

cat > $TMPDIR/docker-compose.yml << EOF
version: '3.5'
services:
  $NAME$stdid:
    image: ${{NAME}}$stdid
    build: .
    privileged: true
    ports:
      - "$httpport:$httpport"
      - "$sshport:22"
EOF
cat > $TMPDIR/launch-$NAME << EOF
#!/bin/bash
cd $TMPDIR
docker compose up --build -d
EOF

ssh -q {NOCHECKSSH} $WODRTARGET mkdir -p $TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET sudo cp {WODSTUDDIR}/student$stdid/.ssh/authorized_keys $TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET sudo chmod 644 $TMPDIR/authorized_keys
scp -q {NOCHECKSSH} $TMPDIR/Dockerfile $TMPDIR/docker-compose.yml $TMPDIR/launch-$NAME {WODSCRIPTDIR}/dockerd-entrypoint.sh $WODRTARGET:$TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET chmod 755 $TMPDIR
ssh -q {NOCHECKSSH} $WODRTARGET chmod 644 $TMPDIR/Dockerfile $TMPDIR/docker-compose.yml $TMPDIR/launch-$NAME
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'bash $TMPDIR/launch-$NAME\\'

if [ ! -d "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass" ]; then
	mkdir -p "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass"
fi
ansible-vault encrypt_string --vault-password-file "{WODANSIBLEPRIVDIR}/vault_secret" $httpport --name "'HTTPPORT'" >> "{WODANSIBLEPRIVDIR}/{WODGROUP}/pass/variables_${{w}}_${{stdid}}.yml"

ssh -q {NOCHECKSSH} $WODRTARGET sudo rm -rf $TMPDIR
rm -rf $TMPDIR
"""  # noqa: E501

# reset-WKSHP-Docker101.sh: the account reset, then the container by compose v1's name
# (stopped, removed), the student's stopped containers, dangling images, the project's
# image and unused networks; each failure ignored.
RESET_DOCKER101 = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's reset-WKSHP-Docker101.sh.
set -x

{WODSCRIPTDIR}/reset-appliance.sh

NAME=dockerlab

ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker stop $NAME${{stdid}}_$NAME${{stdid}}_1\\' && /bin/true
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker rm $NAME${{stdid}}_$NAME${{stdid}}_1\\' && /bin/true
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker container prune -f\\' && /bin/true
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker image prune -f\\' && /bin/true
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker rmi $NAME$stdid\\' && /bin/true
ssh -q {NOCHECKSSH} $WODRTARGET sudo su - student$stdid -c \\'docker network prune -f\\' && /bin/true
exit 0
"""  # noqa: E501

# dockerd-entrypoint.sh (not a template): docker-library's Docker-in-Docker entrypoint,
# which ends as the container's own Docker engine. Re-created without its TLS set-up.
DOCKERD_ENTRYPOINT = """\
#!/bin/bash
# Re-creation (test fixture) of wod-backend's dockerd-entrypoint.sh: the container ends as
# its own Docker engine, which keeps it running.
set -eu
exec dockerd --host=unix:///var/run/docker.sock "$@"
"""

# The base ports the container scripts read from hostvars, when a test gives none
# (wod-backend's group_vars/all.yml values; it has none for the Spark ports).
DEFAULT_PORTS = {
    "SSHPORT-WKSHP-Docker101": 14101, "HTTPPORT-WKSHP-Docker101": 14151,
    "HTTPPORT-WKSHP-Spark101": 17161, "SPARKPORT-WKSHP-Spark101": 17061,
    "SPARKPORT2-WKSHP-Spark101": 17111,
}

SCRIPTS = {
    "functions.sh": FUNCTIONS,
    "create-appliance.sh": CREATE_APPLIANCE,
    "reset-appliance.sh": RESET_APPLIANCE,
    "create-WKSHP-Ansible101.sh": CREATE_ANSIBLE101,
    "reset-WKSHP-Ansible101.sh": RESET_ANSIBLE101,
    "create-WKSHP-StackStorm101.sh": CREATE_STACKSTORM101,
    "reset-WKSHP-StackStorm101.sh": RESET_STACKSTORM101,
    "create-WKSHP-Spark101.sh": CREATE_SPARK101,
    "cleanup-WKSHP-Spark101.sh": CLEANUP_SPARK101,
    "reset-WKSHP-Spark101.sh": RESET_SPARK101,
    "cleanup-container-ratio.sh": CLEANUP_CONTAINER_RATIO,
    "create-WKSHP-Docker101.sh": CREATE_DOCKER101,
    "reset-WKSHP-Docker101.sh": RESET_DOCKER101,
    "dockerd-entrypoint.sh": DOCKERD_ENTRYPOINT,
}


@dataclass(frozen=True)
class StockSettings:
    """What the installer substituted into the templates."""

    students_dir: str
    """WODSTUDDIR: the students' homes, on the backend and on the appliances alike."""
    private_scripts: str = "/nonexistent/wod-private/scripts"
    """WODSCRIPTPRIVDIR."""
    ansible_private: str = "/nonexistent/wod-private/ansible"
    """WODANSIBLEPRIVDIR: `vault_secret` and `<WODGROUP>/pass/`."""
    group: str = "production"
    """WODGROUP."""
    hostvars: Mapping[str, str | int] = field(default_factory=dict)
    """`hostvars[inventory_hostname][KEY]` of the container workshops (base ports)."""


def render(template: str, folder: Path, settings: StockSettings) -> str:
    values = {"WODSCRIPTDIR": str(folder), "WODSTUDDIR": settings.students_dir,
              "WODSCRIPTPRIVDIR": settings.private_scripts, "NOCHECKSSH": NOCHECKSSH,
              "WODANSIBLEPRIVDIR": settings.ansible_private, "WODGROUP": settings.group,
              "FIXED_HASH": FIXED_HASH_ESCAPED,
              **{_placeholder(key): value
                 for key, value in {**DEFAULT_PORTS, **settings.hostvars}.items()}}
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
