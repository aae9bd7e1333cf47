"""Appliance benchmark: appliance workshops' CREATEs with the handler modules against the
stock wod-backend scripts, on real test appliances (tests/support/appliances.py: an OpenSSH
sshd chrooted in a Debian root on 127.0.1.X), through the real daemon over SMTP.

Figures, one line each:
1. Ansible101 CREATE time (journal: recorded -> done), sequential orders, one student each,
   p50 and p99, with the module (`workshops/ansible101.py`, in-process daemon) and with the
   stock scripts (re-created as the installer rendered them, tests/support/
   stock_appliance_scripts.py, run by `hooks.use_scripts` as WODUSER from a `wodmail serve`
   in a mount namespace: tests/support/stock_backend.py), each on a fresh appliance of the
   same kind; the stock/module ratio (goal >= 10x; the issue measured 5.2 s per stock CREATE).
2. ssh connections opened per CREATE: the module's pool counter (`appliances.opened`; goal 0
   after an appliance's first order) and, for both, the connections sshd accepted (its log).
3. 40 CREATEs across 2 appliances (Ansible101 on one, StackStorm101 on the other, 20
   students each) from 10 concurrent portal-style clients, module: wall time from the first
   send to the last order done, and the connections opened.
4. A container workshop's CREATE (Spark101, module, compose v2, on the tests' Docker engine
   and stand-in lab image: tests/support/docker_engine.py), split by its appliance calls
   (the job result's records, each with its name and ms): the previous project removed, the
   account, the project's files, `docker build`, `compose up -d`, waiting for the port
   (ready), finding the container, its password, reading the token, the rest; p50 over the
   orders.

Each line carries the load average when it was printed. Run as root (appliances, chpasswd,
the stock backend's mount namespace and sudo):

    .venv/bin/python bench/appliance_orders.py [--orders 20] [--concurrent 40] [--clients 10]

Exit status 1 if an order failed (a missed goal is only printed).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _cli import positive  # noqa: E402  (bench/ is on sys.path when a script runs)

from support import appliances, docker_engine, reaper, stock_backend  # noqa: E402
from support.appliances import Appliance, ApplianceRoot, KeyPair, Spec  # noqa: E402
from support.e2e import Backend2E  # noqa: E402
from support.workshop_orders import (  # noqa: E402
    CUSTOMER_BASE,
    WorkshopBackend,
    free_bases,
    workshop_backend,
    workshop_box,
)
from wodmail.config import parse_config  # noqa: E402
from wodmail.dev.sandbox import SAMPLE_WORKSHOP  # noqa: E402
from wodmail.dev.standins.mail_clients import send_portal_style_async  # noqa: E402
from wodmail.journal.jobs import Job, JobState  # noqa: E402
from wodmail.logs import configure_logging  # noqa: E402

ANSIBLE = "WKSHP-Ansible101"
STACKSTORM = "WKSHP-StackStorm101"
HTPASSWD = {ANSIBLE: "/etc/httpd/conf/htpasswd", STACKSTORM: "/etc/st2/htpasswd"}
SKEL = {".bashrc": "# appliance skel\n"}
GOAL_RATIO = 10.0
LIMIT = 600.0
ACCEPTED = "Accepted publickey for "


# --- appliances ------------------------------------------------------------------------------


@dataclass
class Lab:
    """The appliances of a run: one shared root, one reaped cgroup, one admin key."""

    work: Path
    root: ApplianceRoot
    cgroups: reaper.ReapedCgroup
    key: KeyPair
    made: list[Appliance] = field(default_factory=list)

    engine: docker_engine.DockerEngine | None = None

    def appliance(self, **options: object) -> Appliance:
        spec = Spec(admin_pubkey=self.key.public, **options)  # type: ignore[arg-type]
        mounts = self.engine.appliance_mounts(spec.compose) if self.engine and spec.docker else []
        made = Appliance(spec, self.root, self.work / f"appliance-{len(self.made)}",
                         self.cgroups, mounts)
        self.made.append(made)
        made.start()
        return made

    def start_engine(self, stack: ExitStack) -> docker_engine.DockerEngine:
        """The tests' Docker engine (its data root kept in the cache, as the tests keep
        it), its stand-in images built."""
        # A short folder: the engine's socket path must fit in 107 bytes.
        folder = Path(tempfile.mkdtemp(prefix="wodb-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        data_root = stack.enter_context(docker_engine._data_root(folder / "data"))
        self.engine = docker_engine.DockerEngine(folder, data_root, self.cgroups)
        stack.callback(self.engine.close)
        self.engine.build_images()
        return self.engine

    def close(self) -> None:
        for made in self.made:
            made.close()
        self.cgroups.close()


@contextmanager
def lab(work: Path) -> Iterator[Lab]:
    root = appliances.prepare_root()
    reaper.leftovers(appliances.CGROUP_PREFIX)
    cgroups = reaper.ReapedCgroup(f"{appliances.CGROUP_PREFIX}{os.getpid()}-bench")
    made = Lab(work, root, cgroups, appliances.make_keypair(work / "admin-key"))
    try:
        yield made
    finally:
        made.close()


def accepted(appliance: Appliance) -> int:
    """ssh connections sshd accepted so far (its log, LogLevel VERBOSE)."""
    return appliance.log.count(ACCEPTED)


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Sequential:
    """Sequential CREATEs on one side: per order, its time, its hook's and its connections."""

    seconds: list[float] = field(default_factory=list)
    hook_ms: list[float] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)  # the pool's counter (module only)
    accepted: list[int] = field(default_factory=list)  # sshd's log
    failed: list[str] = field(default_factory=list)
    load: str = ""  # when the last order was done


def order_seconds(job: Job) -> float:
    assert job.finished_at is not None
    return job.finished_at - job.received_at


def create_hook_ms(job: Job) -> float:
    """The create hooks' time: the module's or the scripts' (their appliance calls, listed
    after them, are part of it)."""
    return sum(hook["ms"] for hook in job.result.get("hooks", [])
               if hook["name"].startswith(("module ", "script ")) and not hook.get("skipped"))


def pool_opened(wb: WorkshopBackend) -> int:
    wod = wb.wod
    assert isinstance(wod, Backend2E)
    return wod.daemon._runner.backend.appliances.opened  # type: ignore[attr-defined]


def key_pool_short(config_file: Path) -> int:
    """How many keys the daemon's pool of student keys (files in state_dir/keys) lacks."""
    config = parse_config(yaml.safe_load(config_file.read_text()), str(config_file))
    size = config.students.max - config.students.min + 1
    folder = config.state_dir / "keys"
    return size - (sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0)


async def wait_key_pool(config_file: Path, limit: float = LIMIT) -> None:
    """Until the pool is full, as before an event: key generation is not what is measured."""
    deadline = time.monotonic() + limit
    while await asyncio.to_thread(key_pool_short, config_file) > 0:
        assert time.monotonic() < deadline, f"key pool not full after {limit} s"
        await asyncio.sleep(0.2)


async def sequential(wb: WorkshopBackend, appliance: Appliance, orders: int,
                     module: bool) -> Sequential:
    figures = Sequential()
    await wait_key_pool(wb.config_file)
    for student in range(1, orders + 1):
        opened, seen = pool_opened(wb) if module else 0, accepted(appliance)
        job = await wb.order("CREATE", student, limit=LIMIT)
        if job.state is not JobState.DONE:
            figures.failed.append(f"CREATE {student}: {job.reason}")
            continue
        figures.seconds.append(order_seconds(job))
        figures.hook_ms.append(create_hook_ms(job))
        figures.opened.append(pool_opened(wb) - opened if module else 0)
        figures.accepted.append(accepted(appliance) - seen)
    figures.load = load()
    return figures


async def module_side(lab_: Lab, orders: int, spec: dict[str, object]) -> Sequential:
    appliance = lab_.appliance(**spec)
    stock_backend.prepare_appliance(appliance)
    wb = await workshop_backend(lab_.work / "module", appliance, lab_.key, ANSIBLE,
                                students=range(1, orders + 1))
    try:
        return await sequential(wb, appliance, orders, module=True)
    finally:
        await wb.stop()


async def stock_side(lab_: Lab, orders: int, spec: dict[str, object]) -> Sequential:
    appliance = lab_.appliance(**spec)
    stock_backend.prepare_appliance(appliance)
    backend = await stock_backend.stock_backend(lab_.work / "stock", appliance, lab_.key,
                                                ANSIBLE, students=range(1, orders + 1),
                                                cgroups=lab_.cgroups)
    try:
        return await sequential(backend.orders, appliance, orders, module=False)
    finally:
        await backend.stop()


@dataclass
class Burst:
    orders: int
    clients: int
    seconds: float
    per_order: list[float]
    opened: int
    accepted: int
    failed: list[str]
    load: str


async def burst(lab_: Lab, orders: int, clients: int) -> Burst:
    """`orders` CREATEs, half Ansible101 on one appliance, half StackStorm101 on another,
    sent by `clients` concurrent portal-style clients to one daemon (module)."""
    half = orders // 2
    first = lab_.appliance(students=range(1, half + 1), htpasswd_files=(HTPASSWD[ANSIBLE],),
                           skel=SKEL)
    second = lab_.appliance(students=range(half + 1, orders + 1),
                            htpasswd_files=(HTPASSWD[STACKSTORM],), skel=SKEL)
    made = workshop_box(lab_.work / "burst", first, lab_.key, ANSIBLE,
                        students=range(1, orders + 1))
    wanted = add_workshop(made.box, made.data, STACKSTORM, second, range(half + 1, orders + 1))
    config_file = lab_.work / "burst" / "wodmail.yml"
    config_file.write_text(yaml.safe_dump(made.data))
    wod = await Backend2E(made.box, parse_config(made.data, str(config_file))).start()
    try:
        await wait_key_pool(config_file)
        subjects = [(f"CREATE {n} {CUSTOMER_BASE + n} p{n}@example.com", ANSIBLE)
                    for n in range(1, half + 1)] + wanted
        seen = accepted(first) + accepted(second)
        started = time.time()
        await send_all(wod.daemon.port, subjects, clients)
        jobs = await wait_all(wod, len(subjects))
        done = [job for job in jobs if job.state is JobState.DONE]
        backend = wod.daemon._runner.backend  # type: ignore[attr-defined]
        return Burst(
            orders=len(subjects), clients=clients,
            seconds=max(job.finished_at or 0 for job in jobs) - started,
            per_order=[order_seconds(job) for job in done],
            opened=backend.appliances.opened,
            accepted=accepted(first) + accepted(second) - seen,
            failed=[f"{job.subject}: {job.reason}" for job in jobs if job not in done],
            load=load(),
        )
    finally:
        await wod.stop()
        made.box.close()


def add_workshop(box, data, workshop: str, appliance: Appliance,  # type: ignore[no-untyped-def]
                 students: range) -> list[tuple[str, str]]:
    """A second mono-appliance workshop in a workshop_box; the (subject, body) of a CREATE
    of each of `students` on it."""
    shutil.copytree(box.root / "notebooks" / SAMPLE_WORKSHOP, box.root / "notebooks" / workshop)
    box.portal.add_workshop(notebook=workshop, name=workshop, capacity=len(students),
                            range=[students.start, students.stop - 1], monoappliance=True,
                            reset=True)
    data["vars"][f"IP-{workshop}"] = appliance.address
    orders = []
    for n in students:
        customer = 2 * CUSTOMER_BASE + n
        box.portal.add_customer(customer, notebook=workshop, studentId=n + box.base_id,
                                email=f"q{n}@example.com")
        orders.append((f"CREATE {n} {customer} q{n}@example.com", workshop))
    return orders


async def send_all(port: int, orders: list[tuple[str, str]], clients: int) -> None:
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for order in orders:
        queue.put_nowait(order)

    async def client() -> None:
        while not queue.empty():
            subject, body = queue.get_nowait()
            await send_portal_style_async("127.0.0.1", port, subject, body)

    await asyncio.gather(*(client() for _ in range(clients)))


async def wait_all(wod: Backend2E, count: int, limit: float = LIMIT) -> list[Job]:
    deadline = time.monotonic() + limit
    while True:
        jobs = [job for job in wod.jobs() if job.verb == "CREATE"]
        if len(jobs) >= count and all(job.state.finished for job in jobs):
            return jobs
        assert time.monotonic() < deadline, f"{len(jobs)} of {count} orders after {limit} s"
        await asyncio.sleep(0.05)


# CREATE's appliance calls by what they do: (part, a pattern of the call's name). Names are
# the command lines, cut at 128 characters.
CALL_PARTS = (
    ("previous project removed", r"test -d /tmp/|compose\.project=|docker rmi|rm -rf -- /tmp/"),
    ("container password", r"docker exec .*chpasswd"),
    ("account", r"getent passwd|sudo chpasswd|pkill|-mindepth 1"),
    ("files", r"mkdir -p -m 0755|cat > \"\$1\.new\""),
    ("build", r"docker build "),
    ("up", r" -p \S+ up\b"),
    ("ready", r"/dev/tcp/"),
    ("container lookups", r" -p \S+ ps\b|docker inspect"),
    ("token", r"lab list"),
)


def call_part(name: str) -> str:
    for part, pattern in CALL_PARTS:
        if re.search(pattern, name):
            return part
    return "other"


@dataclass
class ContainerCreates:
    seconds: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    load: str = ""


async def container_creates(lab_: Lab, orders: int) -> ContainerCreates:
    """`orders` Spark101 CREATEs in a row on one docker appliance (compose v2), module."""
    students = range(401, 401 + orders)  # student N is uid N in the image: no system uid
    appliance = lab_.appliance(students=students, docker=True, compose=("v2",), skel=SKEL)
    keys = ("HTTPPORT-WKSHP-Spark101", "SPARKPORT-WKSHP-Spark101", "SPARKPORT2-WKSHP-Spark101")
    ports = dict(zip(keys, free_bases(len(keys), orders), strict=True))
    wb = await workshop_backend(lab_.work / "containers", appliance, lab_.key,
                                "WKSHP-Spark101", students=students, variables=ports)
    figures = ContainerCreates()
    try:
        await wait_key_pool(wb.config_file)
        for student in students:
            job = await wb.order("CREATE", student, limit=LIMIT)
            if job.state is not JobState.DONE:
                figures.failed.append(f"Spark101 CREATE {student}: {job.reason}")
                continue
            figures.seconds.append(order_seconds(job))
            parts: dict[str, float] = {}
            for hook in job.result["hooks"]:
                if hook["name"].startswith("appliance "):
                    part = call_part(hook["name"])
                    parts[part] = parts.get(part, 0) + hook["ms"]
            for part, ms in parts.items():
                figures.parts.setdefault(part, []).append(ms)
        figures.load = load()
    finally:
        await wb.stop()
    return figures


# --- the report ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 20 values is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def load() -> str:
    return "load avg " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def report_create(module: Sequential, stock: Sequential) -> None:
    if not module.seconds or not stock.seconds:
        print("1. Ansible101 CREATE: no order done on one side")
        return
    ratio = statistics.median(stock.seconds) / statistics.median(module.seconds)
    print(f"1. Ansible101 CREATE, recorded -> done, {len(module.seconds)} + "
          f"{len(stock.seconds)} sequential orders: module p50 "
          f"{statistics.median(module.seconds) * 1000:.0f} ms p99 "
          f"{percentile(module.seconds, 99) * 1000:.0f} ms; stock scripts p50 "
          f"{statistics.median(stock.seconds):.2f} s p99 {percentile(stock.seconds, 99):.2f} s; "
          f"stock/module {ratio:.1f}x (goal >= {GOAL_RATIO:.0f}x: "
          f"{verdict(ratio >= GOAL_RATIO)}); the create hook alone p50 "
          f"{statistics.median(module.hook_ms):.0f} ms vs {statistics.median(stock.hook_ms):.0f} "
          f"ms; {module.load} / {stock.load}")


def report_connections(module: Sequential, stock: Sequential) -> None:
    if not module.opened or not stock.accepted:
        return
    later = module.opened[1:]
    met = not any(later)
    print(f"2. ssh connections per CREATE: module opened {module.opened[0]} at the first order, "
          f"then {statistics.mean(later or [0]):.1f} per order (pool counter; sshd accepted "
          f"{sum(module.accepted)} over {len(module.accepted)} orders) (goal 0 after the first: "
          f"{verdict(met)}); stock scripts {statistics.mean(stock.accepted):.1f} per order "
          f"(sshd accepted, min {min(stock.accepted)} max {max(stock.accepted)})")


def report_burst(figures: Burst) -> None:
    print(f"3. {figures.orders} CREATEs across 2 appliances ({ANSIBLE}, {STACKSTORM}) from "
          f"{figures.clients} concurrent clients, module: {figures.seconds:.2f} s from the "
          f"first send to the last done; per order recorded -> done p50 "
          f"{statistics.median(figures.per_order or [0]):.2f} s max "
          f"{max(figures.per_order or [0]):.2f} s; ssh connections opened {figures.opened} "
          f"(sshd accepted {figures.accepted}); {figures.load}")


def report_containers(figures: ContainerCreates) -> None:
    if not figures.seconds:
        print("4. Spark101 CREATE: no order done")
        return
    order = [part for part, _ in CALL_PARTS] + ["other"]
    split = ", ".join(f"{part} {statistics.median(figures.parts[part]):.0f} ms"
                      for part in order if part in figures.parts)
    print(f"4. Spark101 CREATE (module, compose v2, stand-in image), {len(figures.seconds)} "
          f"sequential orders: recorded -> done p50 {statistics.median(figures.seconds):.2f} s; "
          f"appliance calls p50: {split}; {figures.load}")


# --- entry point -----------------------------------------------------------------------------


async def run(lab_: Lab, args: argparse.Namespace) -> list[str]:
    spec: dict[str, object] = {
        "students": range(1, args.orders + 1), "htpasswd_files": (HTPASSWD[ANSIBLE],),
        "skel": SKEL,
        # The stock scripts use one WODSTUDDIR on the backend and the appliance: both kinds
        # of appliance get the stock backend's students folder.
        "students_dir": stock_backend.stock_students_dir(lab_.work / "stock"),
    }
    module = await module_side(lab_, args.orders, spec)
    stock = await stock_side(lab_, args.orders, spec)
    report_create(module, stock)
    report_connections(module, stock)
    figures = await burst(lab_, args.concurrent, args.clients)
    report_burst(figures)
    failed = module.failed + stock.failed + figures.failed
    if args.containers:
        why = docker_engine.missing()
        if why:
            print(f"4. Spark101 CREATE: no Docker engine here: {why}")
        else:
            with ExitStack() as stack:
                lab_.start_engine(stack)
                containers = await container_creates(lab_, args.containers)
            report_containers(containers)
            failed += containers.failed
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=positive, default=20,
                        help="sequential CREATEs on each side (figures 1 and 2)")
    parser.add_argument("--concurrent", type=positive, default=40,
                        help="CREATEs of the burst across 2 appliances (figure 3)")
    parser.add_argument("--clients", type=positive, default=10, help="concurrent clients")
    parser.add_argument("--containers", type=int, default=3,
                        help="Spark101 CREATEs for figure 4 (0: none)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the sandboxes go (default: a temp dir)")
    args = parser.parse_args(argv)
    why = appliances.missing() or stock_backend.missing()
    if why:
        print(f"bench/appliance_orders.py cannot run here: {why}", file=sys.stderr)
        return 2
    print(f"machine: nproc {len(os.sched_getaffinity(0))}, {load()}")
    with (
        open(os.devnull, "w") as devnull,
        tempfile.TemporaryDirectory(prefix="wodmail-appliance-", dir=args.workdir) as base,
        lab(Path(base)) as lab_,
    ):
        configure_logging(0, stream=devnull)  # the in-process daemons log as wodmail does
        failed = asyncio.run(run(lab_, args))
    for line in failed[:20]:
        print(f"FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
