"""The journal on disk: permissions, group commit, isolation of failing writes."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from wodmail.jobs import JobState
from wodmail.journal import Arrival, Journal, JournalReader
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
