"""Cancelled and timed-out calls: their waits stop, and threads and Redis stay bounded.

Over a real stdio session the client cancels get_result calls (the official client sends
`notifications/cancelled`; the SDK's server cancels the handler). The server process's thread
count, read from /proc, must stay within the tool-thread cap, and its Redis traffic must stop.
The service-level waits are also run directly in a thread with their cancel flag set.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import redis
from mcp import ClientSession

from celery_mcp.config import Settings
from celery_mcp.errors import Cancelled
from celery_mcp.interfaces.mcp.server import TOOL_THREADS
from celery_mcp.models.tasks import GetResultInput
from celery_mcp.runtime import embedded as emb
from celery_mcp.runtime.connect import open_cluster
from celery_mcp.service import cancel, rpc_results, tasks
from celery_mcp.service.cluster import Cluster
from celery_mcp.stores import workflows as records
from tests.support import call, mcp_session

CALLS = 100
BURSTS = 2
#: Threads over baseline + cap allowed: the SDK's transport threads come and go.
SLACK = 8


@pytest.fixture
def private_env(tmp_path: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Settings with an embedded Valkey of this test alone (its traffic is the server's)."""
    data = tmp_path / "data"
    emb.ensure_running(data)
    yield env | {"CELERY_MCP_DATA_DIR": str(data)}
    emb.stop(data)


def _serve_process() -> psutil.Process:
    serving = [
        p
        for p in psutil.Process().children(recursive=True)
        if "serve" in p.cmdline() and "celery_mcp" in p.cmdline()
    ]
    assert serving, "no celery_mcp serve child"
    return max(serving, key=lambda p: p.create_time())


@contextlib.contextmanager
def thread_peak(proc: psutil.Process) -> Iterator[list[int]]:
    """Sample `proc`'s thread count every 5 ms; yields [peak], updated while sampling."""
    peak = [proc.num_threads()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.num_threads())
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


async def _cancelled_burst(session: ClientSession, task_id: str) -> None:
    """CALLS get_result calls of 60 s waits, cancelled by the client after 0.2 s."""
    with anyio.move_on_after(0.2):
        async with anyio.create_task_group() as tg:
            for _ in range(CALLS):
                tg.start_soon(
                    session.call_tool, "get_result", {"task_id": task_id, "timeout_s": 60}
                )


def _commands(client: Any) -> int:
    return int(client.info("stats")["total_commands_processed"])


@pytest.mark.anyio
async def test_cancelled_get_results_stop_and_stay_within_the_thread_cap(
    private_env: dict[str, str],
) -> None:
    data = Path(private_env["CELERY_MCP_DATA_DIR"])
    valkey = emb.read_state(data)
    assert valkey is not None
    client = redis.Redis.from_url(valkey.url_for_db(0), socket_timeout=5)
    task_id = str(uuid.uuid4())  # PENDING for ever: no such task
    async with mcp_session(private_env) as session:
        await call(session, "get_status", task_id=task_id)  # the cluster is open and warm
        server = _serve_process()
        baseline = server.num_threads()
        with thread_peak(server) as peak:
            for _ in range(BURSTS):
                await _cancelled_burst(session, task_id)
                await anyio.sleep(0.5)
        after = server.num_threads()
        before = _commands(client)
        await anyio.sleep(1.0)
        per_s = _commands(client) - before - 1  # less this INFO
        with anyio.fail_after(5):
            status = await call(session, "get_status", task_id=task_id)
        print(
            f"threads: baseline {baseline}, peak {peak[0]}, after {after}; "
            f"redis commands/s after the cancels: {per_s}"
        )
    assert status["status"] == "PENDING"
    assert peak[0] <= baseline + TOOL_THREADS + SLACK, (baseline, peak[0])
    assert after <= baseline + TOOL_THREADS + SLACK, (baseline, after)
    assert per_s <= 5, f"cancelled waits still poll Redis: {per_s} commands/s"


# -- the service's waits, cancelled directly -------------------------------------------------

#: Longest a wait may run on once its cancel flag is set.
STOP_S = 0.5
RPC_BROKER_DB = 35


def _cancelled_after(delay_s: float, wait: Callable[[], object]) -> tuple[BaseException, float]:
    """Run `wait` in a thread, set its cancel flag after `delay_s`; (its error, s to end)."""
    flag = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        with cancel.watching(flag):
            try:
                wait()
            except BaseException as exc:
                raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(delay_s)
    flag.set()
    set_at = time.monotonic()
    thread.join(10)
    ended = time.monotonic() - set_at
    assert not thread.is_alive() and raised, "the wait did not end"
    return raised[0], ended


def test_a_cancelled_result_wait_ends_at_once(cluster: Cluster) -> None:
    request = GetResultInput(task_id=str(uuid.uuid4()), timeout_s=60)
    error, ended = _cancelled_after(0.3, lambda: tasks.get_result(cluster, request))
    assert isinstance(error, Cancelled) and error.code == "cancelled"
    assert ended < STOP_S, ended


def test_a_cancelled_group_wait_ends_at_once(cluster: Cluster) -> None:
    group_id = str(uuid.uuid4())
    backend = cluster.app.backend  # saved as GroupResult.save() does, without AsyncResults
    members = [((str(uuid.uuid4()), None), None) for _ in range(3)]  # that outlive the backend
    saved = backend.encode({"result": ((group_id, None), members)})
    backend.set(backend.get_key_for_group(group_id), saved)
    with ThreadPoolExecutor(1) as pool:  # its thread's backend and subscriptions go with it
        assert pool.submit(records.saved_group_ids, cluster.app, group_id).result() is not None
    request = GetResultInput(task_id=group_id, timeout_s=60)
    error, ended = _cancelled_after(0.3, lambda: tasks.get_result(cluster, request))
    gc.collect()  # dead AsyncResults unsubscribe now, while the backend is still up
    assert isinstance(error, Cancelled)
    assert ended < STOP_S, ended


def test_a_cancelled_rpc_reply_wait_ends_at_once(
    embedded: emb.EmbeddedServer, data_dir: Path
) -> None:
    settings = Settings(
        data_dir=data_dir,
        broker_url=embedded.url_for_db(RPC_BROKER_DB),
        result_backend="rpc://",
    )
    rpc = open_cluster(settings)
    try:
        replies = rpc_results.drain(rpc)
        error, ended = _cancelled_after(0.3, lambda: replies.wait(str(uuid.uuid4()), 60))
    finally:
        if rpc.reply_drain is not None:
            rpc.reply_drain.stop()
    assert isinstance(error, Cancelled)
    assert ended < STOP_S, ended


def test_an_uncancelled_wait_runs_its_time(cluster: Cluster) -> None:
    request = GetResultInput(task_id=str(uuid.uuid4()), timeout_s=0.3)
    with cancel.watching(threading.Event()):
        result = tasks.get_result(cluster, request)
    assert result.timed_out and 0.3 <= result.waited_s < 0.3 + STOP_S
