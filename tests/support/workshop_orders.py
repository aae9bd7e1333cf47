"""Whole orders of the shipped appliance workshops (workshops/*.py) against real appliances
(support.appliances): a sandbox backend (stand-in portal and hub, a sandbox root) that also
serves WKSHP-X with the sample notebooks, and a running daemon whose config reaches the
appliance as its admin.

`WorkshopBackend` is what a test drives: `await wb.order("CREATE", 3)` sends the order over
SMTP and returns the job when it has a result.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from support.appliance_pool import appliance_settings
from support.appliances import Appliance, KeyPair
from support.e2e import Backend2E
from wodmail.config import parse_config
from wodmail.dev.sandbox import SAMPLE_WORKSHOP, Sandbox, make_sandbox
from wodmail.journal.jobs import Job

CUSTOMER_BASE = 100
LIMIT = 300.0


@dataclass
class WorkshopBackend:
    box: Sandbox
    workshop: str
    config_file: Path
    wod: OrderTaker
    customers: dict[int, int] = field(default_factory=dict)

    async def order(self, verb: str, student: int | str, *, limit: float = LIMIT) -> Job:
        first = int(str(student).split(",")[0])
        customer = self.customers[first]
        subject = f"{verb} {student} {customer} p{first}@example.com"
        return await self.wod.order(subject, self.workshop, limit=limit)

    def home(self, student: int) -> Path:
        return self.box.root / "student" / f"student{student}"

    async def stop(self) -> None:
        try:
            await self.wod.stop()
        finally:
            self.box.close()


class OrderTaker(Protocol):
    """A running daemon a test sends orders to: the in-process `Backend2E`, or a `wodmail
    serve` process (support.stock_backend)."""

    async def order(self, subject: str, body: str, *, limit: float = ...) -> Job: ...

    async def stop(self) -> None: ...


@dataclass
class WorkshopBox:
    """A sandbox serving `workshop` on an appliance, and the config a daemon needs for it."""

    box: Sandbox
    workshop: str
    data: dict[str, Any]
    customers: dict[int, int]

    def started(self, config_file: Path, wod: OrderTaker) -> WorkshopBackend:
        return WorkshopBackend(self.box, self.workshop, config_file, wod, self.customers)


def workshop_box(
    tmp_path: Path, appliance: Appliance, key: KeyPair, workshop: str, *,
    students: range = range(1, 6), fields: Mapping[str, Any] | None = None,
    variables: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
    appliance_options: Mapping[str, Any] | None = None,
) -> WorkshopBox:
    """The sandbox (in `tmp_path/box`, stand-ins started: `box.close()` them) and config
    for a daemon serving `workshop` on `appliance`."""
    box = make_sandbox(tmp_path / "box", students=students,
                       workshop_fields={"monoappliance": True})
    try:
        shutil.copytree(box.root / "notebooks" / SAMPLE_WORKSHOP, box.root / "notebooks" / workshop)
        box.portal.add_workshop(notebook=workshop, name=workshop, capacity=len(students),
                                range=[students.start, students.stop - 1],
                                **{"monoappliance": True, "reset": True, **(fields or {})})
        customers = {}
        for n in students:
            customers[n] = CUSTOMER_BASE + n
            box.portal.add_customer(CUSTOMER_BASE + n, notebook=workshop,
                                    studentId=n + box.base_id, email=f"p{n}@example.com")
        data = box.config_data()
        data["vars"] = {**data.get("vars", {}), f"IP-{workshop}": appliance.address,
                        **(variables or {})}
        data["appliances"] = appliance_settings(appliance, key, container_network="host",
                                                **(appliance_options or {}))
        data.update(extra or {})
    except BaseException:
        box.close()
        raise
    return WorkshopBox(box, workshop, data, customers)


async def workshop_backend(
    tmp_path: Path, appliance: Appliance, key: KeyPair, workshop: str, **options: Any,
) -> WorkshopBackend:
    """A running daemon serving `workshop` (its public handler module) on `appliance`
    (`options`: those of `workshop_box`)."""
    made = workshop_box(tmp_path, appliance, key, workshop, **options)
    try:
        config_file = tmp_path / "wodmail.yml"
        config_file.write_text(yaml.safe_dump(made.data))
        wod = await Backend2E(made.box, parse_config(made.data, str(config_file))).start()
    except BaseException:
        made.box.close()
        raise
    return made.started(config_file, wod)


class ArgvWatch:
    """Polls every process's command line on an appliance while an order runs, keeping every
    line seen, so a test can look for a password in them afterwards (it must never be in a
    command line there: stdin only)."""

    def __init__(self, appliance: Appliance) -> None:
        self._appliance = appliance
        self.lines: set[str] = set()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.lines.update(self._appliance.processes())
            self.polls += 1


def free_bases(count: int, span: int) -> list[int]:
    """`count` base ports, each with `span` free ports after it and apart from each other:
    the test appliances' containers share the host's network, so each student's port must
    be free on the host."""
    bases: list[int] = []
    while len(bases) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + span < 65000 and all(port_free(base + i) for i in range(span)) and not any(
                abs(base - other) < span for other in bases):
            bases.append(base)
    return bases


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
