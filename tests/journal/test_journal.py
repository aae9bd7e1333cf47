"""The journal on disk: permissions, group commit, isolation of failing writes."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from wodmail.journal.jobs import JobState
from wodmail.journal.store import RAW_KEPT_BYTES, Arrival, Journal, JournalReader, StoredMail
from wodmail.orders import Mode, Order, Verb


def order(student: int, customer: int = 0, **kw) -> Order:
    return Order(
        verb=kw.pop("verb", Verb.CREATE),
        student=student,
        customer=customer,
        workshop="WKSHP-API101",
        content="WKSHP-API101",
        mode=Mode.WKSHP,
        **kw,
    )


ARRIVAL = Arrival(peer="127.0.0.1", envelope_from="a@b", raw=b"Subject: x\n")


async def test_files_are_private(tmp_path: Path):
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        await journal.accept(order(1), ARRIVAL)
    finally:
        journal.close()
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "journal.sqlite3").stat().st_mode) == 0o600


async def test_concurrent_accepts_all_committed_with_distinct_ids(tmp_path: Path):
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    try:
        results = await asyncio.gather(
            *(journal.accept(order(n % 20 + 1, customer=n), ARRIVAL) for n in range(300))
        )
    finally:
        journal.close()
    assert len({r.job_id for r in results}) == 300
    jobs = JournalReader(path).list_jobs()
    assert len(jobs) == 300
    assert all(job.state is JobState.ACCEPTED for job in jobs)


async def test_a_failing_write_does_not_undo_its_batch(tmp_path: Path):
    journal = Journal(tmp_path / "j.sqlite3")
    try:

        def broken(conn):
            conn.execute("INSERT INTO orders (state, received_at) VALUES ('accepted', 1)")
            raise RuntimeError("boom")

        results = await asyncio.gather(
            journal.accept(order(1), ARRIVAL),
            journal._write(broken),
            journal.accept(order(2), ARRIVAL),
            return_exceptions=True,
        )
    finally:
        journal.close()
    assert isinstance(results[1], RuntimeError)
    students = [job.student for job in JournalReader(tmp_path / "j.sqlite3").list_jobs()]
    assert sorted(students) == [1, 2]


async def test_lifecycle_of_a_job_record(tmp_path: Path):
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    try:
        accepted = await journal.accept(order(3, customer=825), ARRIVAL)
        await journal.mark_running(accepted.job_id)
        await journal.save_result(accepted.job_id, {"steps": [{"name": "x"}]})
        assert JournalReader(path).get(accepted.job_id).state is JobState.RUNNING
        await journal.finish(
            accepted.job_id, JobState.FAILED, reason="hub: down", result={"steps": []}
        )
    finally:
        journal.close()
    job = JournalReader(path).get(accepted.job_id)
    public = job.to_public()
    assert public["state"] == "failed"
    assert public["reason"] == "hub: down"
    assert public["student"] == 3 and public["customer"] == 825
    assert public["finished_at"] is not None and public["attempts"] == 1


OLD_SCHEMA = """
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, verb TEXT, student INTEGER,
    student_max INTEGER, customer INTEGER, email TEXT, workshop TEXT, content TEXT, mode TEXT,
    message_id TEXT, dedup_key TEXT, peer TEXT, envelope_from TEXT, sender TEXT, subject TEXT,
    reason TEXT, received_at REAL NOT NULL, started_at REAL, finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0, duplicates INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '{}', raw BLOB
);
INSERT INTO orders (state, verb, student, customer, workshop, received_at, attempts, result)
VALUES ('failed', 'CREATE', 3, 825, 'WKSHP-API101', 1700000000, 1, '{"steps": []}');
"""


async def test_a_journal_from_the_previous_version_is_upgraded_in_place(tmp_path: Path):
    import sqlite3

    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    # The CLI (a reader) upgrades it too: an admin may look before the new daemon starts.
    old = JournalReader(path).get(1)
    assert (old.state, old.student, old.attempt_log) == (JobState.FAILED, 3, [])
    journal = Journal(path)
    try:
        accepted = await journal.accept(order(4), ARRIVAL)
        assert await journal.mark_running(accepted.job_id)
    finally:
        journal.close()
    jobs = JournalReader(path).list_jobs(newest_first=False)
    assert [job.id for job in jobs] == [1, 2]
    assert jobs[1].attempt_log[0]["trigger"] == "received"


async def test_every_attempt_keeps_its_reason_and_its_retries(tmp_path: Path):
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    retried = {"steps": [{"name": "hub start", "status": "failed", "attempts": 5}]}
    try:
        job_id = (await journal.accept(order(3), ARRIVAL)).job_id
        await journal.mark_running(job_id)
        journal.note_progress(job_id, retried)
        await journal.mark_running(job_id)  # the daemon restarted mid-run
        await journal.finish(job_id, JobState.FAILED, result=retried, reason="hub start: down")
    finally:
        journal.close()
    public = JournalReader(path).get(job_id).to_public()
    assert public["attempts"] == 2
    assert public["retries"] == 8
    first, second = public["attempt_log"]
    assert (first["outcome"], first["retries"]) == ("interrupted", 4)
    assert (second["trigger"], second["outcome"], second["reason"]) == (
        "restart", "failed", "hub start: down")
    assert second["started_at"] <= second["finished_at"]


async def test_a_running_order_shows_its_current_step_and_try(tmp_path: Path):
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    progress = {"steps": [
        {"name": "workshop", "status": "ok", "ms": 3.0},
        {"name": "hub start", "status": "running", "started_at": 1700000000.0, "attempts": 3,
         "last_error": "hub: 503 Service Unavailable"},
    ]}
    try:
        job_id = (await journal.accept(order(3), ARRIVAL)).job_id
        await journal.mark_running(job_id)
        journal.note_progress(job_id, progress)
        await journal.save_result(job_id, progress)  # waits for the queue before it
    finally:
        journal.close()
    public = JournalReader(path).get(job_id).to_public()
    assert public["current_step"] == {
        "attempt": 1, "name": "hub start", "started_at": "2023-11-14T22:13:20.000+00:00",
        "try": 3, "last_error": "hub: 503 Service Unavailable",
    }
    assert public["retries"] == 2


# ---------------------------------------------------------------- what is kept of a mail


def mail_of(size: int) -> bytes:
    head = b"Subject: CREATE 4 825\nMessage-ID: <m@x>\n\n"
    return head + b"".join(b"line %06d of the body\n" % n for n in range(size))[: size - len(head)]


async def test_the_journal_keeps_the_first_16_kib_of_a_mail_and_counts_the_rest(tmp_path: Path):
    big, small = mail_of(60_000), mail_of(2_000)
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        accepted = await journal.accept(order(4), Arrival("127.0.0.1", "a@b", raw=big))
        refused = await journal.reject("no such workshop", Arrival("127.0.0.1", "a@b", raw=big))
        whole = await journal.accept(order(5), Arrival("127.0.0.1", "a@b", raw=small))
    finally:
        journal.close()
    reader = JournalReader(tmp_path / "journal.sqlite3")
    for job_id in (accepted.job_id, refused):
        stored = reader.stored_mail(job_id)
        assert stored.data == big[:RAW_KEPT_BYTES] and RAW_KEPT_BYTES == 16 * 1024
        assert stored.omitted == len(big) - RAW_KEPT_BYTES
        assert reader.raw(job_id) == big[:RAW_KEPT_BYTES]
    assert reader.stored_mail(whole.job_id) == StoredMail(small, 0)


async def test_mails_journaled_before_the_cap_read_as_kept_whole(tmp_path: Path):
    import sqlite3

    from wodmail.journal import schema

    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as conn:  # a journal as the previous version left it
        conn.executescript(schema.BASE + ";".join(schema.MIGRATIONS[:2]))
        conn.execute("PRAGMA user_version = 2")
        conn.execute("INSERT INTO orders (state, received_at, raw) VALUES ('rejected', 1, ?)",
                     (mail_of(40_000),))
    stored = JournalReader(path).stored_mail(1)
    assert stored == StoredMail(mail_of(40_000), 0)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
