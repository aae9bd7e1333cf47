"""The journal: the durable record of every order and its outcome (SQLite on disk).

An order is acknowledged (SMTP 250) only once `accept` has returned, i.e. once its row is
committed with synchronous=FULL in WAL mode: a crash right after the 250 loses nothing.

All writes go through one writer thread that commits in groups: the writes queued while the
previous commit was syncing are committed together in one transaction; if one of them fails,
the group is rolled back and each write runs again alone, so one failing write does not undo
the others. Concurrent SMTP sessions therefore share fsyncs
instead of queueing behind one fsync each, and no write is acknowledged before its commit.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from wodmail.errors import WodmailError
from wodmail.journal import attempts, maintenance, schema
from wodmail.journal.jobs import Job, JobState
from wodmail.orders import Order

T = TypeVar("T")

JOB_COLUMNS = (
    "id, state, verb, student, student_max, customer, email, workshop, content, mode, "
    "message_id, peer, envelope_from, sender, subject, reason, received_at, started_at, "
    "finished_at, attempts, duplicates, result, attempt_log"
)
MAX_BATCH = 256
# What the journal keeps of a mail: its first 16 KiB (an order's subject, headers and body
# fit many times over), so that an allowed client sending large mails cannot fill the disk
# through it. The order is parsed from the whole mail before it is journaled.
RAW_KEPT_BYTES = 16 * 1024
# A re-sent order is answered as a duplicate only of a copy that is queued, running or done:
# one whose earlier copy failed (or was cancelled) runs again, as a new job.
_COUNTS_AS_ORIGINAL = "state NOT IN ('rejected', 'failed', 'cancelled')"


@dataclass(frozen=True)
class Arrival:
    """Where a mail came from: the SMTP peer, the envelope sender and the raw bytes (all of
    them: the journal keeps the first RAW_KEPT_BYTES)."""

    peer: str | None
    envelope_from: str | None
    raw: bytes = b""
    subject: str | None = None


@dataclass(frozen=True)
class StoredMail:
    """What the journal kept of a mail: its first bytes, and how many were left out."""

    data: bytes
    omitted: int


def _kept(raw: bytes) -> tuple[bytes, int]:
    return raw[:RAW_KEPT_BYTES], max(len(raw) - RAW_KEPT_BYTES, 0)


@dataclass(frozen=True)
class Acceptance:
    job: Job
    duplicate: bool

    @property
    def job_id(self) -> int:
        return self.job.id


@dataclass(frozen=True)
class StepRecord:
    """One named step of an order, as the `steps` table keeps it (one row per job and name).

    `state` is `done` for now (a step whose completion a re-run must not repeat; see
    `steps.Steps`); `detail` is free JSON (its time, tries, the value a re-run reuses).
    """

    job_id: int
    name: str
    state: str
    started_at: float | None
    finished_at: float | None
    attempts: int
    detail: dict[str, Any]


class JournalClosed(RuntimeError):
    pass


class JournalLost(WodmailError):
    """The journal file was removed or replaced under the running daemon."""


class JournalUnreadable(WodmailError):
    """The journal is not a SQLite database wodmail can read (corrupt, or another file)."""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _prepare_files(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class _Identity:
    """Which files the journal is: device and inode of the database and of its WAL.

    Checked after every commit, before any acknowledgement: a journal deleted or replaced
    under a running daemon must not take orders a restart would not find (SQLite keeps
    writing happily into an unlinked inode).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal = path.with_name(path.name + "-wal")
        self._database = _file_id(path)
        self._wal = _file_id(self.wal)

    def problem(self) -> str | None:
        """None while both files are still the ones opened; else what happened."""
        for what, path, expected in (("journal", self.path, self._database),
                                     ("journal's WAL", self.wal, self._wal)):
            current = _file_id(path)
            if current is None:
                return f"the {what} {path} was removed"
            if expected is not None and current != expected:
                return f"the {what} {path} was replaced by another file"
        return None


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)


def _row_to_job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    fields = dict(zip([c.strip() for c in JOB_COLUMNS.split(",")], row, strict=True))
    fields["result"] = json.loads(fields["result"] or "{}")
    fields["attempt_log"] = json.loads(fields["attempt_log"] or "[]")
    return Job.model_validate(fields)


class _Writer(threading.Thread):
    """The one thread that writes: takes queued operations and commits them in groups."""

    def __init__(self, conn: sqlite3.Connection, identity: _Identity) -> None:
        super().__init__(name="wodmail-journal", daemon=True)
        self._conn = conn
        self._identity = identity
        self.jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Any] | None]
        self.jobs = queue.SimpleQueue()
        self.commits = 0  # transactions committed (a group of writes counts once)

    def run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.jobs.put(None)
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], Any]]) -> None:
        try:
            outcomes = self._transaction([operation for operation, _ in batch])
        except Exception:
            # One bad write must not undo the others: each runs again in its own transaction.
            outcomes = [self._alone(operation) for operation, _ in batch]
        lost = self._identity.problem()
        if lost is not None:
            error = JournalLost(f"{lost}: nothing can be recorded (restart wodmail)")
            outcomes = [(False, error)] * len(outcomes)
        for (_, deliver), outcome in zip(batch, outcomes, strict=True):
            deliver(outcome)

    def _transaction(
        self, operations: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[bool, Any]]:
        """All of `operations` in one transaction (one fsync); any exception undoes them all."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [(True, operation(conn)) for operation in operations]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return results

    def _alone(self, operation: Callable[[sqlite3.Connection], Any]) -> tuple[bool, Any]:
        try:
            return self._transaction([operation])[0]
        except Exception as exc:  # delivered to the waiting caller
            return (False, exc)


class JournalReader:
    """Read access to the journal, for the CLI and for tools: no writer thread."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no journal at {path}")
        self.path = path
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        """Brings a journal written by an older wodmail up to date (see `schema`)."""
        with self._reader() as conn:
            if schema.version(conn) >= schema.VERSION:
                return
            try:
                schema.migrate(conn)
            except sqlite3.OperationalError as exc:
                raise WodmailError(
                    f"the journal {self.path} needs upgrading and cannot be written: {exc}"
                ) from None

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(_connect(self.path)) as conn:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise JournalUnreadable(f"the journal {self.path} is unreadable: {exc}") from None

    def steps(self, job_id: int) -> list[StepRecord]:
        """The step records of one order, in the order they finished."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT job_id, name, state, started_at, finished_at, attempts, detail"
                " FROM steps WHERE job_id = ? ORDER BY finished_at, rowid",
                (job_id,),
            ).fetchall()
        return [StepRecord(*row[:6], json.loads(row[6] or "{}")) for row in rows]

    def get(self, job_id: int) -> Job | None:
        with self._reader() as conn:
            row = conn.execute(
                f"SELECT {JOB_COLUMNS} FROM orders WHERE id = ?", (job_id,)
            ).fetchone()
        return _row_to_job(row) if row else None

    def get_many(self, job_ids: list[int]) -> list[Job]:
        """The orders of `job_ids` that exist, by id."""
        jobs: list[Job] = []
        with self._reader() as conn:
            for start in range(0, len(job_ids), 500):  # within SQLite's variable limit
                chunk = job_ids[start:start + 500]
                rows = conn.execute(
                    f"SELECT {JOB_COLUMNS} FROM orders WHERE id IN ({','.join('?' * len(chunk))})"
                    " ORDER BY id", chunk,
                ).fetchall()
                jobs.extend(_row_to_job(row) for row in rows)
        return jobs

    def raw(self, job_id: int) -> bytes | None:
        """The mail's bytes as kept (its first RAW_KEPT_BYTES); see `stored_mail`."""
        stored = self.stored_mail(job_id)
        return stored.data if stored is not None else None

    def stored_mail(self, job_id: int) -> StoredMail | None:
        """What was kept of the order's mail, with the number of bytes left out."""
        with self._reader() as conn:
            row = conn.execute(
                "SELECT raw, raw_omitted FROM orders WHERE id = ?", (job_id,)
            ).fetchone()
        if not row or row[0] is None:
            return None
        return StoredMail(bytes(row[0]), int(row[1]))

    def queued(self) -> list[Job]:
        """Accepted orders not started yet, oldest first."""
        return self.list_jobs(states=[JobState.ACCEPTED], newest_first=False)

    def queued_ids(self) -> list[int]:
        """The ids of `queued`, read from the state index alone: cheap to ask every second
        while thousands of orders wait."""
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT id FROM orders WHERE state = ? ORDER BY id", (JobState.ACCEPTED.value,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def unfinished(self) -> list[Job]:
        """Orders accepted (or started) but not finished, oldest first: to run again."""
        return self.list_jobs(states=[JobState.ACCEPTED, JobState.RUNNING], newest_first=False)

    def list_jobs(
        self,
        *,
        states: list[JobState] | None = None,
        student: int | None = None,
        workshop: str | None = None,
        verb: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
        before: int | None = None,
    ) -> list[Job]:
        """Orders matching every filter given; `before`: only those with a smaller id."""
        clauses: list[str] = []
        params: list[Any] = []
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        if states:
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(state.value for state in states)
        if student is not None:
            clauses.append("(student = ? OR (student <= ? AND student_max >= ?))")
            params.extend([student, student, student])
        if workshop is not None:
            clauses.append("(workshop = ? OR content = ?)")
            params.extend([workshop, workshop])
        if verb is not None:
            clauses.append("verb = ?")
            params.append(verb.upper())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        tail = f" LIMIT {int(limit)}" if limit else ""
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT {JOB_COLUMNS} FROM orders {where} ORDER BY id {order}{tail}", params
            ).fetchall()
        return [_row_to_job(row) for row in rows]


def lock_path(journal_path: Path) -> Path:
    return journal_path.with_name(journal_path.name + ".lock")


def hold_daemon_lock(journal_path: Path) -> int:
    """Marks the journal as held by this daemon until the returned descriptor is closed (or
    the process dies): `daemon_holds` then says so, and a second daemon is refused."""
    fd = os.open(lock_path(journal_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WodmailError(
            f"another wodmail serve holds the journal {journal_path}: stop it first"
        ) from None
    return fd


def daemon_holds(journal_path: Path) -> bool:
    """Is a running daemon holding this journal? (Admin commands show its orders that are
    recorded `running` as `interrupted` when none is.)"""
    try:
        fd = os.open(lock_path(journal_path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def daemon_pid(journal_path: Path, locks: Path = Path("/proc/locks")) -> int | None:
    """The pid of the daemon holding this journal's lock (`wodmail reload` signals it), from
    the kernel's table of locks; None when no daemon holds it. WodmailError when one does but
    its pid cannot be told (a holder in another pid namespace shows as pid 0 or not at all)."""
    if not daemon_holds(journal_path):
        return None
    held = os.stat(lock_path(journal_path))
    wanted = f"{os.major(held.st_dev):02x}:{os.minor(held.st_dev):02x}:{held.st_ino}"
    try:
        table = locks.read_text()
    except OSError as exc:
        raise WodmailError(f"cannot read {locks}: {exc.strerror}") from None
    holders: dict[str, set[int]] = {}
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4711 fd:01:1234567 0 EOF"; waiters have "->" after "1:".
        fields = line.split()
        if (len(fields) >= 6 and fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"]
                and fields[4].isdigit() and int(fields[4]) > 0):
            holders.setdefault(fields[5], set()).add(int(fields[4]))
    if len(holders.get(wanted, ())) == 1:
        return holders[wanted].pop()
    # On overlayfs the table may name the layer's device rather than the one stat() shows:
    # the inode alone, when it is unambiguous.
    same_inode = {pid for key, pids in holders.items()
                  if key.rsplit(":", 1)[-1] == str(held.st_ino) for pid in pids}
    if len(same_inode) == 1:
        return same_inode.pop()
    raise WodmailError(f"a wodmail holds {lock_path(journal_path)}, but {locks} does not say "
                       "which process (another pid namespace?)")


class JournalAdmin(JournalReader):
    """What `wodmail retry|cancel|prune` do: synchronous writes next to a running daemon
    (SQLite serialises them with the daemon's writer; see `maintenance`)."""

    def _transaction(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        with self._reader() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = operation(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return value

    def retry(self, job_id: int) -> Job:
        self._transaction(lambda conn: maintenance.requeue(conn, job_id, time.time()))
        return self._must_get(job_id)

    def cancel(self, job_id: int) -> Job:
        self._transaction(lambda conn: maintenance.cancel(conn, job_id, time.time()))
        return self._must_get(job_id)

    def prunable(self, older_than_seconds: float) -> dict[str, int]:
        """What `prune` would delete now (refusals over the per-peer cap aside), per state."""
        with self._reader() as conn:
            return maintenance.finished_before(conn, time.time() - older_than_seconds)

    def prune(self, older_than_seconds: float, refusals_per_peer: int) -> maintenance.Pruned:
        before = time.time() - older_than_seconds
        pruned = self._transaction(
            lambda conn: maintenance.prune(conn, before, refusals_per_peer)
        )
        with self._reader() as conn:  # hand the WAL's pages back; the file's free pages are
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # reused by later orders
        return pruned

    def _must_get(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise maintenance.NotAllowed(f"no job {job_id}")
        return job


class Journal(JournalReader):
    """The order journal. Writes are async (group-committed); reads are plain and sync."""

    def __init__(
        self, path: Path, *, dedup_window: float = 120.0, refusals_per_peer: int = 0
    ) -> None:
        _prepare_files(path)
        self.path = path
        self.dedup_window = dedup_window
        self.refusals_per_peer = refusals_per_peer
        try:
            self._write_conn = _connect(path)
            schema.migrate(self._write_conn)
        except sqlite3.DatabaseError as exc:
            raise JournalUnreadable(f"the journal {path} is unreadable: {exc}") from None
        self._writer = _Writer(self._write_conn, _Identity(path))
        self._writer.start()
        self._closed = False

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise JournalClosed("the journal is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def deliver(outcome: tuple[bool, Any]) -> None:
            loop.call_soon_threadsafe(_settle, future, outcome)

        self._writer.jobs.put((operation, deliver))
        return await future

    async def accept(self, order: Order, arrival: Arrival) -> Acceptance:
        """Commits `order` (or finds the order it duplicates); returns once it is on disk."""
        now = time.time()
        return await self._write(lambda conn: self._accept(conn, order, arrival, now))

    def _accept(
        self, conn: sqlite3.Connection, order: Order, arrival: Arrival, now: float
    ) -> Acceptance:
        original = self._find_duplicate(conn, order, now)
        if original is not None:
            conn.execute("UPDATE orders SET duplicates = duplicates + 1 WHERE id = ?", (original,))
            row = conn.execute(f"SELECT {JOB_COLUMNS} FROM orders WHERE id = ?", (original,))
            return Acceptance(_row_to_job(row.fetchone()), duplicate=True)
        cursor = conn.execute(
            "INSERT INTO orders (state, verb, student, student_max, customer, email, workshop,"
            " content, mode, message_id, dedup_key, peer, envelope_from, sender, subject,"
            " received_at, raw, raw_omitted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                JobState.ACCEPTED.value,
                order.verb.value,
                order.student,
                order.student_max,
                order.customer,
                order.email,
                order.workshop,
                order.content,
                order.mode.value,
                order.message_id,
                order.dedup_key(),
                arrival.peer,
                arrival.envelope_from,
                order.sender,
                arrival.subject,
                now,
                *_kept(arrival.raw),
            ),
        )
        job = Job(
            id=int(cursor.lastrowid or 0),
            state=JobState.ACCEPTED,
            verb=order.verb.value,
            student=order.student,
            student_max=order.student_max,
            customer=order.customer,
            email=order.email,
            workshop=order.workshop,
            content=order.content,
            mode=order.mode.value,
            message_id=order.message_id,
            peer=arrival.peer,
            envelope_from=arrival.envelope_from,
            sender=order.sender,
            subject=arrival.subject,
            received_at=now,
        )
        return Acceptance(job, duplicate=False)

    def _find_duplicate(self, conn: sqlite3.Connection, order: Order, now: float) -> int | None:
        if order.message_id:
            # The same Message-ID is the same mail re-sent only if it says the same thing:
            # distinct orders that share one (a client reusing its ID) all run.
            row = conn.execute(
                "SELECT id FROM orders WHERE message_id = ? AND dedup_key = ? AND"
                f" {_COUNTS_AS_ORIGINAL} ORDER BY id DESC LIMIT 1",
                (order.message_id, order.dedup_key()),
            ).fetchone()
            if row:
                return int(row[0])
        if self.dedup_window <= 0:
            return None
        row = conn.execute(
            "SELECT id FROM orders WHERE dedup_key = ? AND received_at >= ? AND"
            f" {_COUNTS_AS_ORIGINAL} ORDER BY id DESC LIMIT 1",
            (order.dedup_key(), now - self.dedup_window),
        ).fetchone()
        if row is None:
            return None
        # Only a repeat of the student's latest order is a duplicate: CREATE, CLEANUP, CREATE
        # for one student within the window is three orders.
        later = conn.execute(
            "SELECT 1 FROM orders WHERE id > ? AND state != 'rejected' AND"
            " (student = ? OR (student IS NULL AND customer = ?)) LIMIT 1",
            (row[0], order.student, order.customer),
        ).fetchone()
        return None if later else int(row[0])

    async def reject(
        self,
        reason: str,
        arrival: Arrival,
        *,
        verb: str | None = None,
        message_id: str | None = None,
        sender: str | None = None,
        student: int | None = None,
        workshop: str | None = None,
    ) -> int:
        """Records a refused mail with its reason (and the student and workshop it named,
        when it got that far); returns its job id."""
        now = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO orders (state, verb, student, workshop, message_id, peer,"
                " envelope_from, sender, subject, reason, received_at, finished_at, raw,"
                " raw_omitted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    JobState.REJECTED.value,
                    verb,
                    student if student is not None and abs(student) < 2**63 else None,
                    workshop,
                    message_id,
                    arrival.peer,
                    arrival.envelope_from,
                    sender,
                    arrival.subject,
                    reason,
                    now,
                    now,
                    *_kept(arrival.raw),
                ),
            )
            maintenance.cap_refusals(conn, arrival.peer, self.refusals_per_peer)
            return int(cursor.lastrowid or 0)

        return await self._write(insert)

    async def mark_running(self, job_id: int) -> bool:
        """Starts an attempt; False when the order is no longer queued (an admin cancelled it)."""
        now = time.time()

        def start(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT attempt_log, result FROM orders WHERE id = ? AND state IN (?, ?)",
                (job_id, JobState.ACCEPTED.value, JobState.RUNNING.value),
            ).fetchone()
            if row is None:
                return False
            log = attempts.started(json.loads(row[0] or "[]"), now, json.loads(row[1] or "{}"))
            conn.execute(
                "UPDATE orders SET state = 'running', started_at = ?, attempts = ?,"
                " attempt_log = ? WHERE id = ?",
                (now, len(log), json.dumps(log), job_id),
            )
            return True

        return await self._write(start)

    async def set_student(self, job_id: int, student: int) -> None:
        """Records the student an `[object Promise]` order was resolved to."""
        await self._write(
            lambda conn: conn.execute(
                "UPDATE orders SET student = ? WHERE id = ? AND student IS NULL", (student, job_id)
            )
        )

    def note_progress(self, job_id: int, result: dict[str, Any]) -> None:
        """Like `save_result`, without waiting for the commit: progress shown by `wodmail show`
        (the current step). Writes stay in order, so the final `finish` always wins."""
        text = json.dumps(result, default=str)
        operation = _progress_update(job_id, text)
        if self._closed:
            return
        self._writer.jobs.put((operation, _log_failure))

    async def save_result(self, job_id: int, result: dict[str, Any]) -> None:
        """Stores the result so far without changing the state (progress of a running order)."""
        text = json.dumps(result, default=str)
        await self._write(
            lambda conn: conn.execute("UPDATE orders SET result = ? WHERE id = ?", (text, job_id))
        )

    async def record_step(self, step: StepRecord, result: dict[str, Any]) -> None:
        """Commits a finished step together with the order's result so far, durably.

        What a re-run relies on: once this returns, a crash cannot make the step run again.
        """
        text = json.dumps(result, default=str)

        def write(conn: sqlite3.Connection) -> None:
            _upsert_step(conn, step)
            conn.execute("UPDATE orders SET result = ? WHERE id = ?", (text, step.job_id))

        await self._write(write)

    async def finish(
        self,
        job_id: int,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        if not state.finished:
            raise ValueError(f"{state} is not a final state")
        now = time.time()
        result = result or {}
        text = json.dumps(result, default=str)

        def close(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT attempt_log FROM orders WHERE id = ?", (job_id,)).fetchone()
            log = attempts.finished(
                json.loads(row[0] or "[]") if row else [], now, state.value, reason, result
            )
            conn.execute(
                "UPDATE orders SET state = ?, result = ?, reason = ?, finished_at = ?,"
                " attempt_log = ? WHERE id = ?",
                (state.value, text, reason, now, json.dumps(log, default=str), job_id),
            )

        await self._write(close)

    async def probe(self) -> None:
        """One real commit that changes no record (the header's user_version, rewritten as it
        is): proves the journal takes writes (for the health check)."""
        await self._write(
            lambda conn: conn.execute(f"PRAGMA user_version = {schema.version(conn)}")
        )

    @property
    def commits(self) -> int:
        """Transactions committed so far: fewer than the writes when they were grouped."""
        return self._writer.commits

    def alive(self) -> bool:
        """The writer thread is there to commit (it is not whether a commit would succeed)."""
        return not self._closed and self._writer.is_alive()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.jobs.put(None)
        self._writer.join()
        self._write_conn.close()


def _progress_update(job_id: int, text: str) -> Callable[[sqlite3.Connection], Any]:
    return lambda conn: conn.execute(
        "UPDATE orders SET result = ? WHERE id = ? AND state = 'running'", (text, job_id)
    )


def _log_failure(outcome: tuple[bool, Any]) -> None:
    ok, value = outcome
    if not ok:
        structlog.get_logger(__name__).warning("progress not recorded", error=str(value))


async def until_recorded(what: str, write: Callable[[], Awaitable[T]]) -> T:
    """Runs a journal write until it commits: a full disk must delay an order's record, never
    lose it. Backs off up to 30 s between tries; a journal that is gone (`JournalLost`) or
    closed cannot be written again and is raised at once."""
    pause = 0.2
    while True:
        try:
            return await write()
        except (JournalLost, JournalClosed):
            raise
        except Exception as exc:
            structlog.get_logger(__name__).error(
                "journal write failed; will retry", what=what, error=str(exc),
                retry_in=round(pause, 1))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)


def _upsert_step(conn: sqlite3.Connection, step: StepRecord) -> None:
    conn.execute(
        "INSERT INTO steps (job_id, name, state, started_at, finished_at, attempts, detail)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT (job_id, name) DO UPDATE SET state = excluded.state,"
        " started_at = excluded.started_at, finished_at = excluded.finished_at,"
        " attempts = excluded.attempts, detail = excluded.detail",
        (step.job_id, step.name, step.state, step.started_at, step.finished_at, step.attempts,
         json.dumps(step.detail, default=str)),
    )


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
