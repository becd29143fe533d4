"""Task history over MCP: a real `celery-mcp monitor`, a real prefork worker, real MCP servers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from celery import chain
from mcp import ClientSession

from celery_mcp.models.tasks import SendTaskInput
from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.history import history_store
from celery_mcp.service.tasks import send_task
from celery_mcp.stores.history import HistoryStore, SentTask
from tests.support import (
    Worker,
    call,
    call_error,
    mcp_session,
    run_cli,
    started_monitor,
    wait_until,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def monitor(env: dict[str, str], embedded: EmbeddedServer, data_dir: Path) -> Iterator[None]:
    with started_monitor(env, data_dir):
        yield


async def wait_for_task(
    session: ClientSession, task_id: str, state: str, timeout_s: float = 15
) -> dict[str, Any]:
    """Poll until the recorded history has `state` for the task; return get_task's answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await session.call_tool(
            "list_tasks", {"status": [state], "within_s": 600, "limit": 200}
        )
        rows = (found.structured_content or {}).get("tasks", [])
        if any(t["task_id"] == task_id for t in rows):
            return await call(session, "get_task", task_id=task_id)
        assert time.monotonic() < deadline, f"{task_id} never reached {state} in the history"
        await anyio.sleep(0.2)


async def test_serve_with_worker_also_runs_the_monitor(
    env: dict[str, str], cluster: Cluster, data_dir: Path
) -> None:
    store = history_store(cluster)
    assert not store.status()["recording"], "another monitor is running"
    async with mcp_session(env, "--with-worker") as session:
        start = time.monotonic()
        while not (await call(session, "list_tasks", limit=1))["recorder"]["recording"]:
            assert time.monotonic() - start < 30, (data_dir / "monitor.log").read_text()
            await anyio.sleep(0.2)
    wait_until(lambda: not store.status()["recording"], 15, 0.2, "monitor stopped with serve")


def test_tasks_finished_while_no_monitor_ran_are_backfilled_from_the_backend(
    env: dict[str, str], worker: Worker, cluster: Cluster, data_dir: Path
) -> None:
    store = history_store(cluster)
    assert not store.status()["recording"], "another monitor is running"
    ok = cluster.app.send_task("demo.add", args=[2, 2])
    bad = cluster.app.send_task("demo.fail", kwargs={"message": "while nobody watched"})
    assert ok.get(timeout=15) == 4
    bad.get(timeout=15, propagate=False)
    assert store.get(ok.id) is None
    with started_monitor(env, data_dir):
        wait_until(lambda: store.get(bad.id), 15, 0.2, "backfill")
    rec = store.get(ok.id)
    assert rec and rec.state == "SUCCESS" and rec.args == [2, 2] and rec.exact
    failed = store.get(bad.id)
    assert failed and failed.state == "FAILURE" and "nobody watched" in str(failed.exception)
    assert str(failed.worker).startswith("w1@") and failed.queue == "celery"


def test_chain_steps_after_a_failure_backfill_as_not_run(
    env: dict[str, str], worker: Worker, cluster: Cluster, data_dir: Path
) -> None:
    """A user's own chain (Celery's canvas) that failed while no monitor recorded."""
    store = history_store(cluster)
    assert not store.status()["recording"], "another monitor is running"
    app = cluster.app
    message = f"broke {uuid.uuid4().hex[:6]}"
    first = app.signature("demo.fail", kwargs={"message": message})
    flow = chain(first, app.signature("demo.mul", args=[2]), app.signature("demo.mul", args=[5]))
    last = flow.apply_async()
    last.get(timeout=15, propagate=False)
    ids = [last.parent.parent.id, last.parent.id, last.id]
    with started_monitor(env, data_dir):
        wait_until(lambda: all(store.get(i) for i in ids), 15, 0.2, "backfill")
    recs = [store.get(i) for i in ids]
    assert (
        recs[0] and recs[0].state == "FAILURE" and recs[0].exception == f"RuntimeError: {message}"
    )
    for rec in recs[1:]:
        assert rec and rec.state == "NOT_RUN" and rec.blocked_by == ids[0], rec
        assert rec.exception is None


def test_a_standby_monitor_takes_over_when_the_recorder_is_killed(
    env: dict[str, str], worker: Worker, cluster: Cluster, data_dir: Path
) -> None:
    store = history_store(cluster)
    with started_monitor(env, data_dir) as active:
        log = data_dir / f"standby-{uuid.uuid4().hex[:6]}.log"
        with open(log, "ab") as out:
            standby = subprocess.Popen(
                [sys.executable, "-m", "celery_mcp", "monitor", "--log-level", "INFO"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: b"standing by" in log.read_bytes(), 20, 0.1, "standby")
            assert b"recording task history" not in log.read_bytes()  # the lock is taken
            active.kill()
            active.wait(5)
            wait_until(lambda: b"Connected to" in log.read_bytes(), 20, 0.2, "takeover")
            sent = cluster.app.send_task("demo.add", args=[3, 4])
            assert sent.get(timeout=15) == 7
            wait_until(lambda: getattr(store.get(sent.id), "state", None) == "SUCCESS", 10, 0.1)
        finally:
            standby.terminate()
            standby.wait(15)


async def test_history_survives_server_restart_and_covers_tasks_run_while_it_was_down(
    env: dict[str, str], worker: Worker, monitor: None, cluster: Cluster
) -> None:
    async with mcp_session(env) as first:
        sent = await call(first, "send_task", task_name="demo.add", args=[20, 22])
        await call(first, "get_result", task_id=sent["task_id"], timeout_s=10)
        await wait_for_task(first, sent["task_id"], "SUCCESS")
    # no MCP server runs now: a client sends a task and a worker runs it
    offline = cluster.app.send_task("demo.mul", args=[6, 7])
    assert offline.get(timeout=15) == 42
    async with mcp_session(env) as second:
        await wait_for_task(second, offline.id, "SUCCESS")
        listed = await call(second, "list_tasks", within_s=300, limit=200)
        ids = {t["task_id"]: t for t in listed["tasks"]}
        assert {sent["task_id"], offline.id} <= set(ids)
        row = ids[offline.id]
        assert row["task_name"] == "demo.mul" and row["worker"].startswith("w1@")
        assert row["queue"] == "celery" and row["runtime_s"] is not None
        assert listed["recorder"]["recording"] is True
        detail = await call(second, "get_task", task_id=offline.id)
        assert detail["args"] == [6, 7] and detail["args_exact"] and detail["result"] == 42
        timeline = detail["timeline"]
        assert timeline["sent"] and timeline["received"] <= timeline["started"]
        assert timeline["started"] <= timeline["succeeded"] == timeline["finished"]
    code, out = run_cli(env, "--action", "get_task", "--task-id", sent["task_id"])
    assert code == 0 and out["result"] == 42 and out["status"] == "SUCCESS"


async def test_retry_task_reruns_a_failed_task_and_links_both_ids(
    mcp: ClientSession, monitor: None
) -> None:
    key = f"hist-{uuid.uuid4().hex}"
    sent = await call(mcp, "send_task", task_name="demo.flaky", args=[key, 1])
    first = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert first["status"] == "FAILURE"
    failed = await wait_for_task(mcp, sent["task_id"], "FAILURE")
    assert "RuntimeError" in failed["exception"] and "attempt 1 of 1" in failed["traceback"]
    retried = await call(mcp, "retry_task", task_id=sent["task_id"])
    new_id = retried["new_task_id"]
    assert new_id != sent["task_id"] and retried["task_name"] == "demo.flaky"
    assert retried["queue"] == "celery" and retried["original_status"] == "FAILURE"
    second = await call(mcp, "get_result", task_id=new_id, timeout_s=10)
    assert second["success"] and second["result"] == "ok after 2 attempts"
    original = await call(mcp, "get_task", task_id=sent["task_id"])
    rerun = await wait_for_task(mcp, new_id, "SUCCESS")
    assert original["retried_as"] == [new_id]
    assert rerun["retry_of"] == sent["task_id"] and rerun["args"] == [key, 1]


async def test_retry_task_refuses_tasks_that_did_not_fail(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.add", args=[1, 1])
    await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    text = await call_error(mcp, "retry_task", task_id=sent["task_id"])
    assert "invalid_argument" in text and "SUCCESS" in text
    missing = await call_error(mcp, "get_task", task_id=f"nope-{uuid.uuid4().hex}")
    assert "not_found" in missing and "list_tasks" in missing


async def test_list_tasks_filters_paginates_and_counts(mcp: ClientSession, monitor: None) -> None:
    start = time.time()
    ids = []
    for i in range(3):
        ids.append((await call(mcp, "send_task", task_name="demo.add", args=[i, i]))["task_id"])
    for _ in range(2):
        ids.append((await call(mcp, "send_task", task_name="demo.fail"))["task_id"])
    for tid in ids:
        await call(mcp, "get_result", task_id=tid, timeout_s=10)
    for tid in ids[-2:]:
        await wait_for_task(mcp, tid, "FAILURE")
    for tid in ids[:3]:
        await wait_for_task(mcp, tid, "SUCCESS")
    window = {"since": datetime.fromtimestamp(start, UTC).isoformat()}
    failed = await call(mcp, "list_tasks", status=["FAILURE"], task_name="demo.fai*", **window)
    assert [t["task_id"] for t in failed["tasks"]] == ids[-1:-3:-1]  # newest first
    assert failed["counts_by_status"] == {"FAILURE": 2}
    assert all(t["error"].startswith("RuntimeError") for t in failed["tasks"])
    adds = await call(mcp, "list_tasks", task_name="demo.add", worker="w1@*", **window)
    assert adds["counts_by_status"].get("SUCCESS") == 3
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await call(mcp, "list_tasks", limit=2, cursor=cursor, **window)
        seen += [t["task_id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    nobody = await call(mcp, "list_tasks", queue="no-such-queue", **window)
    assert nobody["tasks"] == [] and nobody["next_cursor"] is None


async def test_retry_failed_lists_without_confirm_and_resends_with_it(
    mcp: ClientSession, monitor: None
) -> None:
    start = datetime.now(UTC).isoformat()
    sent = await call(mcp, "send_task", task_name="demo.fail", kwargs={"message": "bulk"})
    await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    await wait_for_task(mcp, sent["task_id"], "FAILURE")
    args = {"task_name": "demo.fail", "since": start, "max_tasks": 5}
    dry = await call(mcp, "retry_failed", **args)
    assert not dry["executed"] and "confirm" in dry["message"]
    row = next(c for c in dry["candidates"] if c["task_id"] == sent["task_id"])
    assert row["new_task_id"] is None and row["skipped"] is None
    done = await call(mcp, "retry_failed", confirm=True, **args)
    row = next(c for c in done["candidates"] if c["task_id"] == sent["task_id"])
    assert done["executed"] and row["new_task_id"]
    rerun = await call(mcp, "get_result", task_id=row["new_task_id"], timeout_s=10)
    assert rerun["error"] == "RuntimeError: bulk"
    again = await call(mcp, "retry_failed", confirm=True, **args)
    row = next(c for c in again["candidates"] if c["task_id"] == sent["task_id"])
    assert row["skipped"] and "already retried" in row["skipped"]


@pytest.fixture
def store(cluster: Cluster) -> Iterator[HistoryStore]:
    """A history of its own (a fresh key prefix) in the test Valkey, deleted after."""
    prefix = f"test-history-{uuid.uuid4().hex[:8]}:"
    client = cluster.history.r
    yield HistoryStore(client, max_tasks=1_000, max_age_s=3_600, field_bytes=256, prefix=prefix)
    for key in client.scan_iter(match=f"{prefix}*", count=1_000):
        client.delete(key)


def test_retention_stays_bounded_after_50k_events(store: HistoryStore) -> None:
    """The recorder's write path, fed directly: count and age caps hold, no key leaks."""
    client, prefix = store.r, store.prefix
    now = time.time()
    kinds = ("task-sent", "task-received", "task-started", "task-succeeded")
    batch: list[dict[str, Any]] = []
    for i in range(12_500):  # 4 events each: 50,000 events
        ts = now - 7_200 + i * 0.5  # the first ~7,200 are older than max_age_s
        tid = f"t{i:06d}"
        for k, kind in enumerate(kinds):
            batch.append(
                {
                    "type": kind,
                    "uuid": tid,
                    "timestamp": ts + k * 0.01,
                    "name": f"bench.task{i % 7}",
                    "args": "(1, 2)",
                    "kwargs": "{}",
                    "hostname": "w@h",
                    "result": "x" * 1_000,
                    "runtime": 0.01,
                    "queue": "celery",
                }
            )
        if len(batch) >= 1_000:
            store.record(batch)
            batch = []
    store.record(batch)
    store.record([{"type": "worker-heartbeat", "hostname": "w@h", "timestamp": now}])
    kept = client.zcard(store.key("idx"))
    slack = max(100, 1_000 // 100)
    assert 1_000 <= kept <= 1_000 + slack
    oldest = float(client.zrange(store.key("idx"), 0, 0, withscores=True)[0][1])
    assert oldest >= now - 3_600 - 1
    keys = list(client.scan_iter(match=f"{prefix}*", count=5_000))
    records = [k for k in keys if k.startswith(prefix + "t:")]
    assert len(records) == kept
    assert len(keys) - len(records) <= 30  # indexes, nkeys, workers, meta
    assert sum(client.zcard(k) for k in keys if k.startswith(prefix + "s:")) == kept
    rec = store.get(f"t{12_499:06d}")
    assert rec is not None and rec.state == "SUCCESS" and len(str(rec.result)) <= 257
    store.max_age_s = 60  # age cap alone now removes everything older than a minute
    store.maybe_trim(now=now + 60)
    assert client.zcard(store.key("idx")) == 0
    assert not [k for k in client.scan_iter(match=f"{prefix}[tsn]:*", count=5_000)]


async def test_retry_task_resends_a_revoked_task(mcp: ClientSession, monitor: None) -> None:
    sent = await call(
        mcp,
        "send_task",
        task_name="demo.echo",
        args=[1],
        kwargs={"k": "v"},
        countdown=1.5,
        expires=0.5,
    )
    expired = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert expired["status"] == "REVOKED"
    retried = await call(mcp, "retry_task", task_id=sent["task_id"])
    assert retried["original_status"] == "REVOKED"
    rerun = await call(mcp, "get_result", task_id=retried["new_task_id"], timeout_s=10)
    assert rerun["result"] == {"args": [1], "kwargs": {"k": "v"}}


async def test_chain_steps_after_a_failure_are_recorded_not_run(
    env: dict[str, str], worker: Worker, monitor: None
) -> None:
    async with mcp_session({**env, "CELERY_MCP_TOOLSETS": "all"}) as session:
        steps = [
            {"task_name": "demo.fail", "kwargs": {"message": "step one broke"}},
            {"task_name": "demo.mul", "args": [3]},
        ]
        sent = await call(session, "chain_tasks", steps=steps)
        tree = await call(session, "get_workflow", workflow_id=sent["workflow_id"])
        failed_id, skipped_id = (n["task_id"] for n in tree["nodes"])
        await wait_for_task(session, failed_id, "FAILURE")
        skipped = await call(session, "get_task", task_id=skipped_id)
        assert skipped["status"] == "NOT_RUN" and skipped["blocked_by"] == failed_id, skipped
        assert skipped["exception"] is None
        failed = await call(session, "get_task", task_id=failed_id)
        # one exception format everywhere, and only the user's frames in the traceback
        assert failed["exception"] == "RuntimeError: step one broke"
        assert (
            "demo_tasks.py" in failed["traceback"] and "runtime/worker" not in failed["traceback"]
        )
        result = await call(session, "get_result", task_id=failed_id, timeout_s=5)
        assert (
            result["error"] == failed["exception"] and "runtime/worker" not in result["traceback"]
        )
        failures = await call(session, "list_tasks", status=["FAILURE"], within_s=600, limit=200)
        assert skipped_id not in {t["task_id"] for t in failures["tasks"]}
        row = next(t for t in failures["tasks"] if t["task_id"] == failed_id)
        assert row["error"] == "RuntimeError: step one broke"
        dry = await call(session, "retry_failed", task_name="demo.mul", within_s=600)
        assert skipped_id not in {c["task_id"] for c in dry["candidates"]}


async def test_retry_failed_dry_run_reports_exactly_what_confirm_does(
    mcp: ClientSession, monitor: None
) -> None:
    start = datetime.now(UTC).isoformat()
    tag = uuid.uuid4().hex[:6]
    sent = [
        await call(mcp, "send_task", task_name="demo.fail", kwargs={"message": f"{tag}-{i}"})
        for i in range(2)
    ]
    # arguments its signature refuses: it failed on the worker, and a re-send is refused
    sent.append(await call(mcp, "send_task", task_name="demo.add", args=[tag], validate_args=False))
    for task in sent:
        await call(mcp, "get_result", task_id=task["task_id"], timeout_s=10)
        await wait_for_task(mcp, task["task_id"], "FAILURE")
    ids = {t["task_id"] for t in sent}
    args = {"since": start, "max_tasks": 50}

    def mine(result: dict[str, Any]) -> dict[str, bool]:
        return {
            c["task_id"]: c["skipped"] is None for c in result["candidates"] if c["task_id"] in ids
        }

    dry = await call(mcp, "retry_failed", **args)
    done = await call(mcp, "retry_failed", confirm=True, **args)
    assert mine(dry) == mine(done) and len(mine(dry)) == 3, (dry, done)
    assert sorted(mine(done).values()) == [False, True, True]
    assert dry["retried"] == done["retried"] and dry["skipped"] == done["skipped"]


def test_a_send_is_noted_even_when_the_server_lost_the_notes_script(cluster: Cluster) -> None:
    """A send's note goes out before its publish and its reply is read after it; a Redis that
    lost the note's script (a restart, SCRIPT FLUSH) gets it loaded and the note written."""
    queue = f"parked-{uuid.uuid4().hex[:8]}"
    cluster.history.r.script_flush()
    try:
        sent = send_task(cluster, SendTaskInput(task_name="demo.add", args=[1, 2], queue=queue))
        rec = cluster.history.get(sent.task_id)
        assert rec is not None and rec.args == [1, 2] and rec.args_source == "sent", rec
        assert cluster.history.r.llen(queue) == 1  # and the task went out, once
    finally:
        cluster.history.r.delete(queue)


def _received(tid: str, at: float) -> dict[str, Any]:
    """A worker's task-received event of demo.add(1, 2), as Celery sends it (repr args)."""
    return {
        "type": "task-received",
        "uuid": tid,
        "timestamp": at,
        "name": "demo.add",
        "args": "(1, 2)",
        "kwargs": "{}",
        "hostname": "w@h",
    }


def test_a_note_after_the_record_was_made_keeps_exact_arguments_beside_it(
    store: HistoryStore,
) -> None:
    """send_task(wait_s) notes the task after its publish, so the recorder may have made the
    record from the worker's events first: the exact arguments are kept and read anyway."""
    tid, now = str(uuid.uuid4()), time.time()
    store.r.script_flush()  # the recorder's create is loaded again, as after a restart
    store.record([_received(tid, now)])
    before = store.get(tid)
    assert before is not None and not before.exact and before.args == "(1, 2)"
    store.note_sent([SentTask(tid, "demo.add", [1, 2], {"x": [3]}, "q1")], at=now - 0.01)
    rec = store.get(tid)
    assert rec is not None and rec.state == "RECEIVED", rec
    assert (rec.args, rec.kwargs, rec.exact, rec.args_source) == ([1, 2], {"x": [3]}, True, "sent")
    assert store.r.zscore(store.key("s", "PENDING"), tid) is None  # the note left no index
    store.record([{**_received(tid, now + 1), "type": "task-succeeded", "result": "3"}])
    store.r.delete(store.key("a", tid))  # the recorder's merge kept them in the record
    done = store.get(tid)
    assert done is not None and done.state == "SUCCESS" and done.args == [1, 2] and done.exact


def test_the_recorder_merges_again_when_a_note_lands_between_its_read_and_write(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder reads, merges and writes; a note written in between (the interleaving is
    forced: its read is answered as it was before the note) is not overwritten: the record
    has the note's exact arguments, queue and send time, the events' state, and one index."""
    tid, now = str(uuid.uuid4()), time.time()
    store.note_sent([SentTask(tid, "demo.add", [1, 2], {}, "q1")], at=now)
    stale_reads = iter([[None]])
    read = store.get_many
    monkeypatch.setattr(store, "get_many", lambda ids: next(stale_reads, None) or read(ids))
    store.record([_received(tid, now + 0.01)])
    rec = store.get(tid)
    assert rec is not None and rec.state == "RECEIVED", rec
    assert (rec.args, rec.exact, rec.queue, rec.sent) == ([1, 2], True, "q1", now)
    assert rec.deliveries == 1  # the events were merged once
    assert store.r.zscore(store.key("s", "RECEIVED"), tid) is not None
    for stale in (store.key("s", "PENDING"), store.key("n", "PENDING", "demo.add")):
        assert store.r.zscore(stale, tid) is None, stale


def test_send_task_with_a_wait_notes_the_task_with_its_exact_arguments(
    cluster: Cluster, worker: Worker
) -> None:
    """send_task(wait_s) writes its note after the publish, while the task runs."""
    sent = send_task(
        cluster, SendTaskInput(task_name="demo.add", args=[2, 3], kwargs={}, wait_s=15)
    )
    assert sent.outcome is not None and sent.outcome.result == 5, sent
    rec = cluster.history.get(sent.task_id)
    assert rec is not None and rec.args == [2, 3] and rec.args_source == "sent", rec
