#!/usr/bin/env bash
# System tools the tests use for real (chpasswd, ssh-keygen, setfacl, slapd, shc, openssl,
# debootstrap, dockerd, pandoc ...).
# Installs what is missing when running as root with apt-get; otherwise the
# tests that need a tool skip with the reason.
set -euo pipefail
need=()
command -v chpasswd >/dev/null || need+=(passwd)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v setfacl >/dev/null || need+=(acl)
command -v slapd >/dev/null || [ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null || need+=(ldap-utils)
command -v shc >/dev/null || need+=(shc)
command -v openssl >/dev/null || need+=(openssl)
# wodmail-test WORD converts notebooks with nbconvert's docx exporter, which runs pandoc
# (21 MB to download). PDF also needs xelatex (texlive, hundreds of MB): not installed, its
# test checks the one-line "install ..." message instead.
command -v pandoc >/dev/null || need+=(pandoc)
# The status page is tested in a real headless browser.
command -v chromium >/dev/null || need+=(chromium)
# systemd-analyze checks the shipped units (nothing is started: a container is not harmed).
command -v systemd-analyze >/dev/null || need+=(systemd)
# The units under a real systemd: a Debian 12 root file system (debootstrap, cached as a
# zstd tarball in ~/.cache/wodmail) booted by systemd-nspawn (tests/e2e/test_systemd_real.py).
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v zstd >/dev/null || need+=(zstd)
# Test appliances (tests/support/appliances.py): sshd in a debootstrap root on loopback, and
# a real Docker engine with compose (docker_engine.py): Debian's docker.io (dockerd and the
# 20.10 CLI the appliances use), docker-compose v1; compose v2 is Debian trixie's package,
# checked with gpgv against the archive keyring and unpacked with dpkg-deb.
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v gpgv >/dev/null || need+=(gpgv)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
# The stock appliance scripts run as WODUSER with sudo on the backend
# (tests/appliances/test_stock_vs_module.py, bench/appliance_orders.py): the host gets
# no rule (tests/support/stock_backend.py).
command -v sudo >/dev/null || need+=(sudo)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${need[*]} and cannot install (not root or no apt-get); tests needing them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq >/dev/null
# slapd's postinst would otherwise ask questions; tests run their own slapd on a temp dir.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged slapd service on install; the tests need none of it.
if command -v service >/dev/null; then service slapd stop >/dev/null 2>&1 || true; fi
# Same for docker.io's engine, if it was installed now: the tests start their own.
if [[ " ${need[*]} " == *" docker.io "* ]] && command -v service >/dev/null; then
  service docker stop >/dev/null 2>&1 || true
fi
