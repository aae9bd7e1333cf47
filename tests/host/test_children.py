"""Programs the daemon runs are waited for without a thread each (Python 3.11's default)."""

from __future__ import annotations

import asyncio
import sys
import threading
import warnings

import pytest

from wodmail.host.children import PidfdWatcher, watch_children_with_pidfds


@pytest.fixture
def pidfd_watcher():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        before = asyncio.get_child_watcher()
        asyncio.set_child_watcher(PidfdWatcher())
        yield
        asyncio.set_child_watcher(before)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ watches pidfds itself")
async def test_programs_exit_codes_come_back_without_a_thread_per_program(pidfd_watcher):
    threads_before = threading.active_count()
    procs = [await asyncio.create_subprocess_exec("sh", "-c", f"sleep 0.2; exit {n}")
             for n in range(5)]
    assert threading.active_count() == threads_before  # ThreadedChildWatcher: +5
    assert [await p.wait() for p in procs] == [0, 1, 2, 3, 4]
    killed = await asyncio.create_subprocess_exec("sleep", "60")
    killed.kill()
    assert await killed.wait() == -9


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ watches pidfds itself")
def test_each_event_loop_gets_its_own_programs_exits(pidfd_watcher):
    """Daemons in tests (and asyncio.run in a thread) each run their own loop."""

    async def run(code: int) -> int:
        proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {code}")
        return await proc.wait()

    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, asyncio.run(run(n))))
               for n in (3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {3: 3, 4: 4}
    assert asyncio.run(run(7)) == 7


def test_the_daemon_installs_it_only_where_python_lacks_it():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        before = asyncio.get_child_watcher() if sys.version_info < (3, 12) else None
        try:
            watch_children_with_pidfds()
            if sys.version_info < (3, 12):
                assert isinstance(asyncio.get_child_watcher(), PidfdWatcher)
        finally:
            if before is not None:
                asyncio.set_child_watcher(before)
