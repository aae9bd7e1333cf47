"""`wodmail demo`: the real daemon, the real test tool, a sandboxed backend, on loopback.

Builds a sandbox (pre-made student homes, the sample workshop shipped with wodmail, a
stand-in portal and hub), starts `wodmail serve` on it as a separate process, sends a
CREATE and a CLEANUP with `wodmail-test --wait`, and prints each order's result and the
calls the stand-in portal and hub received. Needs no root (as root, Linux passwords are
set for real with `chpasswd -R` inside the sandbox) and nothing but loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from wodmail.config import Config
from wodmail.dev.processes import stop_process
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox

STUDENT = 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"wodmail serve exited early:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("wodmail serve did not start listening within 30 s")


def _run(argv: list[str]) -> int:
    print(f"\n$ {' '.join(argv)}", flush=True)
    return subprocess.run(argv, check=False).returncode


def _print_calls(sandbox: Sandbox) -> None:
    print("\n# calls the stand-in portal (API-DB) received:")
    for call in sandbox.portal.calls:
        body = "" if call.json is None else " " + json.dumps(call.json)
        print(f"  {call.method} {call.path}{body} -> {call.status}")
    print("# calls the stand-in JupyterHub received:")
    for call in sandbox.hub.calls:
        print(f"  {call.method} {call.path} -> {call.status}")


# What the sandbox owns whatever the admin's config says: nothing real is touched.
SANDBOX_KEYS = ("listen", "state_dir", "students", "notebooks", "students_dir", "portal", "hub",
                "accounts")


def demo_config_data(sandbox: Sandbox, port: int, base: Config | None) -> dict[str, Any]:
    """The sandbox's config; with `--config`, the admin's file underneath it (its variables,
    hooks, handlers, senders, limits), every key that reaches accounts or peers the sandbox's."""
    data = sandbox.config_data()
    data["listen"]["port"] = port
    if base is None:
        return data
    mine = base.model_dump(mode="json", exclude_unset=True)
    for key in SANDBOX_KEYS:
        mine.pop(key, None)
    # The sample workshop's variables first, the admin's (later, winning) after them.
    mine["group_vars"] = [*data.get("group_vars", []), *mine.get("group_vars", [])]
    return {**data, **mine}


def run_demo(*, keep: bool = False, config: Config | None = None) -> int:
    root = Path(tempfile.mkdtemp(prefix="wodmail-demo-"))
    sandbox = make_sandbox(root / "backend", students=range(1, 4), base_id=100)
    port = _free_port()
    config_path = root / "wodmail.yml"
    data = demo_config_data(sandbox, port, config)
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    log = root / "wodmail.log"
    bindir = Path(sys.executable).parent
    wodmail, wodmail_test = str(bindir / "wodmail"), str(bindir / "wodmail-test")
    print(f"# sandbox in {root} (config {config_path}, daemon log {log})")
    with log.open("wb") as log_file:
        server = subprocess.Popen([wodmail, "serve", "--config", str(config_path)],
                                  stderr=log_file)
    status = 1
    try:
        _wait_listening(port, server, log)
        home = sandbox.home(STUDENT)
        created = _run([wodmail_test, "CREATE", SAMPLE_WORKSHOP, str(STUDENT), "--wait",
                        "--config", str(config_path)])
        print(f"\n# {home} now holds:")
        for path in sorted(home.rglob("*")):
            print(f"  {path.relative_to(home)}")
        cleaned = _run([wodmail_test, "CLEANUP", SAMPLE_WORKSHOP, str(STUDENT), "--wait",
                        "--config", str(config_path)])
        _print_calls(sandbox)
        _run([wodmail, "jobs", "--config", str(config_path)])
        status = created or cleaned
    finally:
        stop_process(server, grace=30)
        sandbox.close()
        if keep:
            print(f"\n# kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("\n# demo " + ("succeeded" if status == 0 else "FAILED"))
    return status


if __name__ == "__main__":
    sys.exit(run_demo(keep=bool(os.environ.get("WODMAIL_DEMO_KEEP"))))
