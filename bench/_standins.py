"""The lifecycle bench's sandbox, with its stand-in portal and hub, in a process of its own.

`bench/intake.py` measures clients against a daemon that executes real CREATEs. The
stand-ins answer the daemon's calls (a few per CREATE) in threads: in the clients' process
they would take the clients' CPU and GIL, and in the daemon's, the daemon's. So they get a
process: it builds the sandbox of `bench/lifecycle.py` (homes, accounts root, generated
workshop, portal records for every order), writes the daemon's config, prints its path as a
JSON line, and serves until SIGTERM.

Run by `Standins.start`; `python bench/_standins.py FOLDER STUDENTS ORDERS FIRST_CUSTOMER
SENDER` by hand.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml


def config_overrides(sender: str) -> dict[str, Any]:
    return {"allowed_senders": [sender]}


def serve(folder: Path, students: int, orders: int, first_customer: int, sender: str) -> int:
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
        cls, folder: Path, students: int, orders: int, first_customer: int, sender: str
    ) -> AsyncIterator[Standins]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, str(folder), str(students), str(orders),
            str(first_customer), sender,
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
    folder, students, orders, first, sender = sys.argv[1:6]
    sys.exit(serve(Path(folder), int(students), int(orders), int(first), sender))
