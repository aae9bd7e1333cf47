"""`/jobs` in pages: 100 orders by default, `limit` up to 1000, `before=<id>` for older
ones, and a `Link: <...>; rel="next"` header while older orders match. The journal on disk
holds 250 finished orders; a real daemon serves them over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from support.status_http import status_port
from wodmail.journal.jobs import JobState
from wodmail.journal.store import Arrival, Journal
from wodmail.orders import Mode, Order, Verb

ORDERS = 250


def _order(n: int) -> Order:
    return Order(verb=Verb.CREATE, student=n % 5 + 1, customer=n, email=f"p{n}@example.com",
                 workshop="WKSHP-API101", content="WKSHP-API101", mode=Mode.WKSHP)


async def _fill(path: Path) -> dict[int, JobState]:
    """ORDERS finished orders: every third one failed, the others done (committed together,
    as concurrent SMTP sessions would)."""
    journal = Journal(path, dedup_window=0)
    arrival = Arrival(peer="127.0.0.1", envelope_from="wod@portal")
    try:
        accepted = await asyncio.gather(
            *(journal.accept(_order(n), arrival) for n in range(1, ORDERS + 1)))
        states = {a.job_id: JobState.FAILED if a.job.customer % 3 == 0 else JobState.DONE
                  for a in accepted}
        await asyncio.gather(*(
            journal.finish(job_id, state, result={"summary": f"order {job_id}"},
                           reason="failed on purpose" if state is JobState.FAILED else None)
            for job_id, state in states.items()))
    finally:
        journal.close()
    assert len(states) == ORDERS
    return states


@pytest.fixture
async def served(make_config, start_daemon) -> AsyncIterator[tuple[httpx.AsyncClient, dict]]:
    config = make_config(status={"listen": "127.0.0.1:0"})
    states = await _fill(config.journal_path())
    daemon = await start_daemon(config)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{status_port(daemon)}",
                                 timeout=60) as client:
        yield client, states


async def _pages(client: httpx.AsyncClient, url: str) -> list[list[dict]]:
    """Every page from `url` on, following the Link headers."""
    pages = []
    while True:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if "next" not in response.links:
            return pages
        url = urljoin(url, response.links["next"]["url"])


async def test_pages_of_100_newest_first_cover_every_order_once(served):
    client, states = served
    pages = await _pages(client, "/jobs")
    assert [len(page) for page in pages] == [100, 100, 50]
    ids = [job["id"] for page in pages for job in page]
    assert ids == sorted(states, reverse=True)
    # The jobs are the same records as before paging: `wodmail jobs --json` fields.
    assert set(pages[0][0]) >= {"id", "state", "verb", "student", "customer", "workshop",
                                "reason", "received_at", "finished_at", "result"}


async def test_limit_and_filters_are_kept_from_page_to_page(served):
    client, states = served
    first = await client.get("/jobs", params={"state": "failed", "limit": 30})
    link = first.links["next"]["url"]
    assert parse_qs(urlsplit(link).query) == {
        "state": ["failed"], "limit": ["30"], "before": [str(first.json()[-1]["id"])]}
    pages = await _pages(client, "/jobs?state=failed&limit=30")
    failed = sorted((id_ for id_, state in states.items() if state is JobState.FAILED),
                    reverse=True)
    assert [job["id"] for page in pages for job in page] == failed
    assert all(len(page) == 30 for page in pages[:-1]) and 0 < len(pages[-1]) <= 30
    assert {job["state"] for page in pages for job in page} == {"failed"}


async def test_before_starts_below_an_id_and_the_last_page_has_no_link(served):
    client, _ = served
    response = await client.get("/jobs", params={"before": 11})
    assert [job["id"] for job in response.json()] == list(range(10, 0, -1))
    assert "link" not in response.headers
    exact = await client.get("/jobs", params={"limit": 10, "before": 11})
    assert len(exact.json()) == 10 and "link" not in exact.headers  # nothing older than id 1
    whole = await client.get("/jobs", params={"limit": 1000})
    assert len(whole.json()) == ORDERS and "link" not in whole.headers


@pytest.mark.parametrize(("query", "error"), [
    ("limit=0", "limit must be from 1 to 1000, got 0"),
    ("limit=1001", "limit must be from 1 to 1000, got 1001"),
    ("limit=-5", "limit must be a whole number, got '-5'"),
    ("before=abc", "before must be a whole number, got 'abc'"),
    ("before=" + "9" * 30, "before must be a whole number"),
    ("after=3", "unknown parameter 'after'"),
])
async def test_a_bad_page_query_is_a_400_saying_why(served, query, error):
    client, _ = served
    response = await client.get(f"/jobs?{query}")
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
