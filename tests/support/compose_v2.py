"""docker compose v2 for test appliances: the CLI plugin of Debian trixie's `docker-compose`
package (2.26.1, built by Debian from source; bookworm has only compose v1).

Fetched once from deb.debian.org and cached (`nspawn.cache_dir()`), trusted by Debian's
chain only: trixie's `InRelease` signature is checked with gpgv against the Debian archive
keyring, `main/binary-amd64/Packages.xz` against the SHA256 InRelease gives it, the .deb
against the SHA256 the Packages entry gives it; then `dpkg-deb -x` extracts
/usr/libexec/docker/cli-plugins/docker-compose.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from support import nspawn

MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
PACKAGE = "docker-compose"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
INDEX = "main/binary-amd64/Packages.xz"
PLUGIN = "usr/libexec/docker/cli-plugins/docker-compose"
TIMEOUT = 300.0


def missing() -> str | None:
    for tool in ("gpgv", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (needed to verify and unpack Debian's compose v2)"
    if not KEYRING.exists():
        return f"{KEYRING} is missing (debian-archive-keyring)"
    return None


def plugin() -> tuple[Path, float]:
    """The cached compose v2 plugin, fetched if absent; and the seconds spent fetching it."""
    cached = nspawn.cache_dir() / f"docker-compose-v2-{SUITE}"
    if cached.exists():
        return cached, 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="compose-v2-") as folder:
        work = Path(folder)
        release = _signed_release(work)
        packages = lzma.decompress(_fetch_verified(f"dists/{SUITE}/{INDEX}",
                                                   _index_sha256(release))).decode()
        entry = _entry(packages, PACKAGE)
        deb = work / "compose.deb"
        deb.write_bytes(_fetch_verified(entry["Filename"], entry["SHA256"]))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True,
                       capture_output=True, timeout=TIMEOUT)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.partial-{os.getpid()}")
        shutil.copyfile(work / "x" / PLUGIN, partial)
        partial.chmod(0o755)
        partial.rename(cached)
    return cached, time.monotonic() - started


def _get(path: str) -> bytes:
    with urllib.request.urlopen(f"{MIRROR}/{path}", timeout=TIMEOUT) as answer:
        data: bytes = answer.read()
    return data


def _signed_release(work: Path) -> str:
    """InRelease's signed text, as gpgv outputs it once the signature is good."""
    signed = work / "InRelease"
    signed.write_bytes(_get(f"dists/{SUITE}/InRelease"))
    done = subprocess.run(["gpgv", "--keyring", str(KEYRING), "--output", "-", str(signed)],
                          capture_output=True, timeout=TIMEOUT)
    if done.returncode != 0:
        raise AssertionError(f"trixie's InRelease signature does not verify:\n"
                             f"{done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def _index_sha256(release: str) -> str:
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.strip() == "SHA256:"
            continue
        fields = line.split()
        if in_sha256 and len(fields) == 3 and fields[2] == INDEX:
            return fields[0]
    raise AssertionError(f"InRelease lists no SHA256 for {INDEX}")


def _fetch_verified(path: str, sha256: str) -> bytes:
    data = _get(path)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise AssertionError(f"{path}: SHA256 {got}, expected {sha256}")
    return data


def _entry(packages: str, name: str) -> dict[str, str]:
    for stanza in packages.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Package") == name:
            return fields
    raise AssertionError(f"no {name} in trixie's {INDEX}")
