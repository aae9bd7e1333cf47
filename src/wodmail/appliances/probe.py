"""What `wodmail check-config` asks of each appliance: can wodmail log in, is its host key
the pinned one, may it sudo without a password, are docker and docker compose there.

Best effort and read-only: a first host key is shown, never pinned; each finding is one
line (`ok` or `warn`) naming the appliance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from wodmail.appliances.connections import AppliancePool
from wodmail.appliances.port import Appliance
from wodmail.errors import WodmailError

PROBE_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class Finding:
    status: Literal["ok", "warn"]
    what: str
    detail: str


async def probe(pool: AppliancePool, address: str, origin: str,
                images: Sequence[str] = ()) -> list[Finding]:
    """The findings for the appliance at `address` (`origin`: the variable naming it), and
    whether it holds the `images` its workshops build from."""
    appliance = Appliance(pool, address)
    what = f"appliance {address}"
    try:
        await appliance.run("true", timeout=PROBE_TIMEOUT_SECONDS)
    except WodmailError as exc:
        return [Finding("warn", what, f"({origin}) {exc}")]
    key = pool.open_connections().get(address, "?")
    shown = {"new": "new: pinned at the first order", "pinned": "pinned"}
    verdict = shown.get(pool.verdict(address), pool.verdict(address))
    findings = [Finding("ok", what, f"({origin}) login as {pool.login_user()}; host key "
                        f"{key} ({verdict})")]
    findings.append(await _sudo(appliance, what))
    findings.append(await _tools(appliance, what))
    if images:
        findings.append(await _images(appliance, what, images))
    return findings


async def _images(appliance: Appliance, what: str, images: Sequence[str]) -> Finding:
    """`docker image inspect` of each image (as the admin account: it is in no docker
    group on every appliance, so through sudo)."""
    missing = []
    for image in images:
        try:
            done = await appliance.run("docker", "image", "inspect", "--format", "{{.Id}}",
                                       image, sudo=True, check=False,
                                       timeout=PROBE_TIMEOUT_SECONDS)
        except WodmailError as exc:
            return Finding("warn", f"{what} images", str(exc))
        if not done.ok:
            missing.append(image)
    if missing:
        return Finding("warn", f"{what} images", f"missing {', '.join(missing)}: the "
                       "installation's setup-WKSHP-X.sh builds them")
    return Finding("ok", f"{what} images", ", ".join(images))


async def _sudo(appliance: Appliance, what: str) -> Finding:
    try:
        await appliance.run("true", sudo=True, timeout=PROBE_TIMEOUT_SECONDS)
    except WodmailError as exc:
        return Finding("warn", f"{what} sudo", str(exc))
    return Finding("ok", f"{what} sudo", "sudo -n true: allowed")


async def _tools(appliance: Appliance, what: str) -> Finding:
    """docker, and compose as a plugin (`docker compose`) or the old `docker-compose`."""
    found = []
    for label, argv in (("docker", ("docker", "--version")),
                        ("compose", ("docker", "compose", "version", "--short")),
                        ("docker-compose", ("docker-compose", "--version"))):
        try:
            done = await appliance.run(*argv, check=False, timeout=PROBE_TIMEOUT_SECONDS)
        except WodmailError as exc:
            return Finding("warn", f"{what} tools", str(exc))
        if done.ok:
            found.append(f"{label} {_version(done.stdout)}")
    if not found:
        return Finding("warn", f"{what} tools", "neither docker nor docker compose found (only "
                       "container workshops need them)")
    return Finding("ok", f"{what} tools", ", ".join(found))


def _version(stdout: str) -> str:
    """`Docker version 20.10.24+dfsg1, build 297e128` -> `20.10.24+dfsg1`."""
    words = stdout.replace(",", " ").split()
    for word in words:
        if word[:1].isdigit() or (word[:1] == "v" and word[1:2].isdigit()):
            return word
    return stdout.strip()[:40]
