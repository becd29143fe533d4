"""diagnose over MCP: real faults (orphan queue, SIGKILLed worker, stuck task) found in < 10 s."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession

from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service.cluster import Cluster
from tests.support import call, started_monitor, started_workers, wait_until

pytestmark = pytest.mark.anyio

FAULT_BOUND_S = 10.0


@pytest.fixture(scope="module")
def monitor(env: dict[str, str], embedded: EmbeddedServer, data_dir: Path) -> Iterator[None]:
    with started_monitor(env, data_dir):
        yield


Match = Callable[[dict[str, Any]], bool]


async def until_found(
    session: ClientSession, match: Match, timeout_s: float = FAULT_BOUND_S, **arguments: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Call diagnose until a finding matches; return (finding, whole report)."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await call(session, "diagnose", **arguments)
        found = [f for f in report["findings"] if match(f)]
        if found:
            return found[0], report
        assert time.monotonic() < deadline, f"no matching finding: {report}"
        await anyio.sleep(0.25)


def forget_queue(cluster: Cluster, queue: str) -> None:
    client = cluster.broker_redis
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


async def test_diagnose_is_always_on_and_runs_every_check(mcp: ClientSession) -> None:
    tools = {t.name: t for t in (await mcp.list_tools()).tools}
    assert tools["diagnose"].annotations.read_only_hint is True
    report = await call(mcp, "diagnose")
    assert set(report["checks"]) == {"broker_settings", "workers", "queues", "failures", "beat"}
    assert report["checks"]["broker_settings"].startswith("ok")  # embedded: AOF, noeviction
    ranks = [{"critical": 0, "warning": 1, "info": 2}[f["severity"]] for f in report["findings"]]
    assert ranks == sorted(ranks)


async def test_queue_without_consumer_is_reported_within_10s(
    mcp: ClientSession, cluster: Cluster, monitor: None
) -> None:
    queue = f"orphan-{uuid.uuid4().hex[:8]}"
    try:
        sent = await call(mcp, "send_task", task_name="demo.noop", queue=queue)
        start = time.monotonic()
        finding, _ = await until_found(
            mcp,
            lambda f: f["check"] == "queue_without_consumer" and f["evidence"]["queue"] == queue,
        )
        assert time.monotonic() - start < FAULT_BOUND_S
        assert finding["severity"] == "critical" and finding["evidence"]["messages"] == 1
        assert finding["next_tool"] and finding["next_arguments"]["queue"] == queue
        waiting, _ = await until_found(
            mcp,
            lambda f: f["check"] == "message_waiting" and f["evidence"]["queue"] == queue,
            max_wait_s=0.5,
        )
        assert waiting["evidence"]["task_id"] == sent["task_id"]
    finally:
        forget_queue(cluster, queue)


async def test_sigkilled_worker_is_reported_within_10s(
    mcp: ClientSession, env: dict[str, str], data_dir: Path, cluster: Cluster, monitor: None
) -> None:
    name = f"victim-{uuid.uuid4().hex[:6]}"
    queue = f"{name}-q"
    with started_workers(env, data_dir, {"hostname": f"{name}@%h", "queues": queue}) as [w]:
        hostname = w.hostname.replace("%h", socket.gethostname())
        try:
            wait_until(  # a heartbeat reached the monitor
                lambda: hostname in cluster.history.workers(), 15, 0.1, "worker heartbeat"
            )
            w.kill()
            start = time.monotonic()
            finding, _ = await until_found(
                mcp, lambda f: f["check"] == "worker_lost" and f["evidence"]["worker"] == hostname
            )
            assert time.monotonic() - start < FAULT_BOUND_S
            assert finding["severity"] == "critical"
            assert finding["next_tool"] == "list_tasks"
            assert finding["next_arguments"]["worker"] == hostname
        finally:
            w.proc.wait(10)
            client = cluster.broker_redis
            for member in client.smembers("_kombu.binding.celery.pidbox"):
                if hostname.encode() in member:
                    client.srem("_kombu.binding.celery.pidbox", member)
            client.hdel("celery-mcp:history:workers", hostname)
            forget_queue(cluster, queue)


async def test_stuck_task_is_reported_within_10s_of_its_threshold(
    mcp: ClientSession, monitor: None
) -> None:
    sent = await call(mcp, "send_task", task_name="demo.sleep", args=[30])
    tid = sent["task_id"]
    try:
        for _ in range(100):
            if (await call(mcp, "get_status", task_id=tid))["status"] == "STARTED":
                break
            await anyio.sleep(0.05)
        threshold_at = time.monotonic() + 2
        finding, _ = await until_found(
            mcp,
            lambda f: f["check"] == "stuck_task" and f["evidence"]["task_id"] == tid,
            timeout_s=2 + FAULT_BOUND_S,
            stuck_after_s=2,
        )
        assert time.monotonic() - threshold_at < FAULT_BOUND_S
        assert finding["evidence"]["running_s"] >= 2 and finding["next_tool"] == "get_task"
    finally:
        await call(mcp, "revoke", task_id=tid, terminate=True, signal="SIGKILL", confirm=True)


async def test_failure_rate_and_top_exception_per_task(mcp: ClientSession, monitor: None) -> None:
    ids = [
        (await call(mcp, "send_task", task_name="demo.fail", kwargs={"message": "rate"}))["task_id"]
        for _ in range(3)
    ]
    for tid in ids:
        await call(mcp, "get_result", task_id=tid, timeout_s=10)
    finding, _ = await until_found(
        mcp,
        lambda f: (
            f["check"] == "task_failures"
            and f["evidence"]["task_name"] == "demo.fail"
            and f["evidence"]["failures"] >= 3
        ),
        window_s=120,
    )
    assert finding["evidence"]["top_exceptions"][0]["type"] == "RuntimeError"
    assert finding["next_tool"] == "list_tasks"
    assert finding["next_arguments"]["status"] == ["FAILURE"]


async def test_eta_beyond_visibility_timeout_is_reported(mcp: ClientSession) -> None:
    # sent only because the caller accepts redelivery (send_task refuses it otherwise)
    far = 13 * 3600  # beyond the 12 h visibility timeout of this project's app
    sent = await call(
        mcp, "send_task", task_name="demo.noop", countdown=far, accept_redelivery=True
    )
    try:
        finding, _ = await until_found(
            mcp,
            lambda f: (
                f["check"] == "eta_beyond_visibility_timeout"
                and f["evidence"]["task_id"] == sent["task_id"]
            ),
        )
        assert finding["severity"] == "warning"
    finally:
        await call(mcp, "revoke", task_id=sent["task_id"])


async def test_eviction_policy_that_loses_messages_is_reported(
    mcp: ClientSession, cluster: Cluster
) -> None:
    client = cluster.broker_redis
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        finding, _ = await until_found(mcp, lambda f: f["check"] == "broker_eviction_policy")
        assert finding["evidence"]["maxmemory_policy"] == "allkeys-lru"
    finally:
        client.config_set("maxmemory-policy", "noeviction")


async def test_schedules_without_a_running_beat_are_reported(
    mcp: ClientSession, cluster: Cluster
) -> None:
    from celery_mcp.models.schedules import AddPeriodicTaskInput, RemovePeriodicTaskInput
    from celery_mcp.service.schedules import add_periodic_task, remove_periodic_task

    name = f"diag-{uuid.uuid4().hex[:8]}"
    add_periodic_task(cluster, AddPeriodicTaskInput(name=name, task_name="demo.noop", every=3600))
    try:
        finding, _ = await until_found(
            mcp, lambda f: f["check"] == "beat_not_running", timeout_s=20
        )
        assert "no beat is running" in finding["summary"]
        assert finding["next_tool"] is None  # the schedules toolset is off by default
    finally:
        remove_periodic_task(cluster, RemovePeriodicTaskInput(name=name, confirm=True))
