"""The lifecycle bench's sandbox, with its stand-in portal and hub, in a process of its own.

`bench/intake.py` measures clients against a daemon that executes real CREATEs. The
stand-ins answer the daemon's calls (a few per CREATE) in threads: in the clients' process
they would take the clients' CPU and GIL, and in the daemon's, the daemon's. So they get a
process: it builds the sandbox of `bench/lifecycle.py` (homes, accounts root, generated
workshop, portal records for every order), writes the daemon's config, prints its path as a
JSON line, and serves until SIGTERM.

The daemon's key pool starts full: `make_keys` writes the pool's files once per bench
invocation (RSA-3072 takes ~160 ms of CPU a key) and each run's fresh state dir gets a copy,
so a run does not wait half a minute for its pool. A key is still handed out once within a
run; runs are separate sandboxes.

Run by `Standins.start`; `python bench/_standins.py FOLDER STUDENTS ORDERS FIRST_CUSTOMER
SENDER KEYS` by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml


def config_overrides(sender: str) -> dict[str, Any]:
    return {"allowed_senders": [sender]}


def make_key(path: Path, bits: int) -> None:
    """One key file as the key pool writes it (PKCS8 PEM, 0600)."""
    from cryptography.hazmat.primitives import serialization

    from wodmail.host.keypool import generate_key

    pem = generate_key(bits).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def make_keys(folder: Path, count: int, bits: int = 3072) -> Path:
    """`count` key files in `folder` (made on every core)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        paths = [folder / f"bench{index:05}.pem" for index in range(count)]
        list(pool.map(make_key, paths, [bits] * count))
    return folder


def copy_keys(keys: Path, state_dir: Path) -> None:
    """The pool's folder of a fresh state dir, filled from `keys`."""
    folder = state_dir / "keys"
    folder.mkdir(parents=True, mode=0o700)
    for key in keys.glob("*.pem"):
        shutil.copy(key, folder / key.name)


def serve(
    folder: Path, students: int, orders: int, first_customer: int, sender: str, keys: Path
) -> int:
    # Blocked before the stand-ins' threads start, so that they inherit the mask and
    # SIGTERM is taken only by `sigwait` below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    import lifecycle  # bench/ is on sys.path when a script runs
    from wodmail.dev.sandbox import make_sandbox

    numbers = range(1, students + 1)
    sandbox = make_sandbox(folder / "sandbox", students=numbers, base_id=lifecycle.BASE_ID)
    try:
        lifecycle.write_workshop(sandbox.notebooks / lifecycle.WORKSHOP)
        lifecycle.register_workshop(sandbox, numbers)
        for index in range(orders):
            customer = first_customer + index
            sandbox.portal.add_customer(
                customer, notebook=lifecycle.WORKSHOP,
                studentId=index % students + 1 + sandbox.base_id,
                email=f"p{index}@example.com",
            )
        data = sandbox.config_data()
        data.update(config_overrides(sender))
        copy_keys(keys, Path(data["state_dir"]))
        config = folder / "wodmail.yml"
        config.write_text(yaml.safe_dump(data))
        print(json.dumps({"config": str(config), "workshop": lifecycle.WORKSHOP}), flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        sandbox.close()
    return 0


class Standins:
    """The parent's handle: the config the daemon reads, and the workshop to order."""

    def __init__(self, process: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.process = process
        self.config = Path(hello["config"])
        self.workshop: str = hello["workshop"]

    @classmethod
    @asynccontextmanager
    async def start(
        cls, folder: Path, students: int, orders: int, first_customer: int, sender: str,
        keys: Path,
    ) -> AsyncIterator[Standins]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, str(folder), str(students), str(orders),
            str(first_customer), sender, str(keys),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"the stand-ins did not start (status {await process.wait()})")
            yield cls(process, json.loads(line))
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()


if __name__ == "__main__":
    folder, students, orders, first, sender, keys = sys.argv[1:7]
    sys.exit(serve(Path(folder), int(students), int(orders), int(first), sender, Path(keys)))
