"""The cancel flag, and the MCP server's thread runner that sets it and keeps the slot."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from celery_mcp.errors import Cancelled
from celery_mcp.interfaces.mcp.server import in_thread
from celery_mcp.service import cancel

#: Longest a wait may run on once its cancel flag is set.
STOP_S = 0.5


def test_without_a_flag_nothing_is_cancelled() -> None:
    assert not cancel.requested()
    cancel.check()
    start = time.monotonic()
    cancel.sleep(0.05)
    assert not cancel.wait(threading.Event(), 0.05)
    assert time.monotonic() - start >= 0.1


def test_a_set_flag_stops_sleeps_and_waits() -> None:
    flag = threading.Event()
    with cancel.watching(flag):
        cancel.check()
        flag.set()
        assert cancel.requested()
        start = time.monotonic()
        with pytest.raises(Cancelled):
            cancel.sleep(60)
        with pytest.raises(Cancelled):
            cancel.wait(threading.Event(), 60)
        assert time.monotonic() - start < 0.1
    assert not cancel.requested()  # the flag was this block's only


def test_a_wait_sees_its_event_and_a_flag_set_later() -> None:
    flag, event = threading.Event(), threading.Event()
    event.set()
    with cancel.watching(flag):
        assert cancel.wait(event, 60)
        event.clear()
        threading.Timer(0.1, flag.set).start()
        start = time.monotonic()
        with pytest.raises(Cancelled):
            cancel.wait(event, 60)
    assert time.monotonic() - start < 0.1 + cancel.POLL_S * 2


def test_flags_are_per_thread() -> None:
    mine, theirs = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with cancel.watching(theirs):
            seen.append(cancel.requested())

    with cancel.watching(mine):
        mine.set()
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert cancel.requested()
    assert seen == [False]


def _waits(flag: threading.Event, ended: list[float]) -> str:
    with cancel.watching(flag):
        try:
            cancel.sleep(60)
        finally:
            ended.append(time.monotonic())
    return "not cancelled"


@pytest.mark.anyio
async def test_in_thread_returns_and_raises_as_the_function() -> None:
    threads = ThreadPoolExecutor(2)
    assert await in_thread(lambda: 42, threads, threading.Event()) == 42

    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await in_thread(fails, threads, threading.Event())


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_a_cancelled_call_stops_its_thread_and_keeps_the_slot_until_then(how: str) -> None:
    threads = ThreadPoolExecutor(1)
    flag = threading.Event()
    ended: list[float] = []
    start = time.monotonic()
    if how == "cancelled":
        with anyio.move_on_after(0.2) as scope:
            await in_thread(lambda: _waits(flag, ended), threads, flag)
        assert scope.cancelled_caught
    else:
        with pytest.raises(TimeoutError), anyio.fail_after(0.2):
            await in_thread(lambda: _waits(flag, ended), threads, flag)
    returned = time.monotonic()
    assert flag.is_set() and ended, "the thread was abandoned, not stopped"
    assert ended[0] <= returned < start + 0.2 + STOP_S
    assert threads.submit(lambda: 1).result(timeout=1) == 1  # its one thread is free again


@pytest.mark.anyio
async def test_a_call_cancelled_while_queued_never_runs() -> None:
    threads = ThreadPoolExecutor(1)
    busy, queued = threading.Event(), threading.Event()
    ran: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(in_thread, lambda: _waits(busy, []), threads, busy)
        await anyio.sleep(0.05)
        with anyio.move_on_after(0.1):
            await in_thread(lambda: ran.append("queued") or "", threads, queued)
        tg.cancel_scope.cancel()
    threads.shutdown(wait=True)
    assert not ran
