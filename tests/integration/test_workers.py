"""The workers toolset over MCP stdio, against two real prefork workers on their own queues.

`wa` consumes `qa` and autoscales (2..3 processes); `wb` consumes `qb` with a fixed pool of 2.
Destructive tests (shutdown, SIGKILL) start workers of their own. Every effect is checked on
the real thing: the process exits, task starts are spaced, LLEN reads 0, the pool's pids change.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from celery.result import AsyncResult
from mcp import ClientSession

from celery_mcp.config import Settings
from celery_mcp.runtime.embedded import resolve
from celery_mcp.service import discovery
from celery_mcp.service.cluster import Cluster
from tests.support import (
    Worker,
    call,
    call_error,
    mcp_session,
    run_cli,
    started_workers,
    wait_until,
)
from tests.toolset_contract import TOOLSET_TOOLS

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

HOST = socket.gethostname()
WA, WB = f"wa@{HOST}", f"wb@{HOST}"
QUICK = ["--without-mingle", "--without-gossip"]
TOOLS = TOOLSET_TOOLS["workers"]


@pytest.fixture(scope="module")
def pair(env: dict[str, str], embedded: Any, data_dir: Path) -> Iterator[list[Worker]]:
    """Two workers with different hostnames and queues."""
    with started_workers(
        env,
        data_dir,
        {"hostname": "wa@%h", "queues": "qa", "extra": [*QUICK, "--autoscale=3,2"]},
        {"hostname": "wb@%h", "queues": "qb", "concurrency": 2, "extra": QUICK},
    ) as workers:
        yield workers


def send(cluster: Cluster, name: str, *args: Any, **options: Any) -> AsyncResult:
    return cluster.app.send_task(name, args=list(args), **options)


def llen_all(cluster: Cluster, queue: str) -> int:
    """LLEN of a queue and of every priority sub-queue kombu may use for it."""
    r = cluster.broker_redis
    return sum(int(r.llen(k)) for k in [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10))])


async def info(mcp: ClientSession, host: str) -> dict[str, Any]:
    out = await call(mcp, "inspect_workers", destination=[host])
    assert [w["hostname"] for w in out["workers"]] == [host], out["missing"]
    return dict(out["workers"][0])


async def until(ask: Any, check: Any, timeout_s: float = 15) -> Any:
    """Poll `await ask()` until `check(answer)` is truthy; return that answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await ask()
        if check(answer):
            return answer
        assert time.monotonic() < deadline, f"condition not met: {answer}"
        await anyio.sleep(0.2)


async def wait_for(mcp: ClientSession, host: str, check: Any) -> Any:
    """Poll inspect_workers(host) until `check(worker_info)` is truthy."""
    return await until(lambda: info(mcp, host), check)


async def control(mcp: ClientSession, host: str, command: str, **args: Any) -> dict[str, Any]:
    out = await call(mcp, "control_workers", command=command, destination=[host], **args)
    assert out["executed"] and [r["hostname"] for r in out["replies"]] == [host], out
    return out


async def test_tools_listed_with_safety_annotations(mcp: ClientSession) -> None:
    tools = {t.name: t for t in (await mcp.list_tools()).tools if t.name in TOOLS}
    assert set(tools) == TOOLS
    for name in ("inspect_workers", "ping_workers", "get_active_tasks", "queue_lengths"):
        assert tools[name].annotations.read_only_hint is True
    for name in ("purge_queue", "control_workers", "shutdown_workers"):
        assert tools[name].annotations.destructive_hint is True
        assert "confirm" in tools[name].input_schema["properties"]
    assert "pool_restart" in tools["control_workers"].description


async def test_ping_and_inspect_describe_both_workers_fast(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    send(cluster, "demo.add", 1, 2, queue="qa").get(timeout=10)
    ping = await call(mcp, "ping_workers", timeout_s=5)
    assert {WA, WB} <= {w["hostname"] for w in ping["active_workers"]}
    assert ping["missing"] == [] and ping["elapsed_ms"] < 5000  # nobody waited the timeout
    out = await call(mcp, "inspect_workers", destination=[WA, WB], timeout_s=5)
    assert out["missing"] == [] and out["elapsed_ms"] < 5000
    assert out["counts"]["workers"] == 2 and out["counts"]["processed"] >= 1
    wa, wb = out["workers"]
    assert (wa["hostname"], wa["queues"], wb["hostname"], wb["queues"]) == (WA, ["qa"], WB, ["qb"])
    assert wa["stats"]["pool"] == wb["stats"]["pool"] == "prefork"
    assert wb["stats"]["concurrency"] == 2 and len(wb["stats"]["pool_processes"]) == 2
    assert wa["stats"]["autoscale"] == {"max": 3, "min": 2}
    assert wa["stats"]["total"].get("demo.add", 0) >= 1
    assert "demo.sleep" in wa["registered"] and wb["stats"]["pid"] == pair[1].proc.pid


async def test_get_active_tasks_shows_running_and_scheduled(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    running = send(cluster, "demo.sleep", 4, queue="qb")
    later = send(cluster, "demo.noop", queue="qb", countdown=60)
    try:
        out = await until(
            lambda: call(mcp, "get_active_tasks", destination=[WB]),
            lambda o: o["counts"]["active"] and o["counts"]["scheduled"],
        )
        (active,) = [t for t in out["tasks"] if t["id"] == running.id]
        assert active["name"] == "demo.sleep" and active["args"] == [4] and active["worker"] == WB
        assert active["worker_pid"] in (await info(mcp, WB))["stats"]["pool_processes"]
        assert datetime.fromisoformat(active["started_at"]).tzinfo is not None
        (scheduled,) = [t for t in out["scheduled"] if t["id"] == later.id]
        assert scheduled["name"] == "demo.noop" and scheduled["eta"] and scheduled["worker"] == WB
        assert out["counts"]["active"] >= 1 and out["counts"]["scheduled"] >= 1
    finally:
        later.revoke()
        running.get(timeout=15)


async def test_get_registered_tasks_per_worker(mcp: ClientSession, pair: list[Worker]) -> None:
    out = await call(mcp, "get_registered_tasks", destination=[WA, WB])
    assert [w["hostname"] for w in out["workers"]] == [WA, WB]
    assert {"demo.add", "demo.sleep"} <= set(out["tasks"])
    assert not [t for t in out["tasks"] if t.startswith("celery.")]


async def test_queue_lengths_count_priority_subqueues(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    for priority in (0, 0, 5, 9):
        send(cluster, "demo.noop", queue="qidle", priority=priority)
    out = await call(mcp, "queue_lengths", queues=["qidle"])
    (q,) = out["queues"]
    assert q["messages"] == 4 == llen_all(cluster, "qidle") == out["total_messages"]
    assert len(q["by_priority"]) >= 2 and sum(q["by_priority"].values()) == 4
    default = await call(mcp, "queue_lengths")
    by_name = {q["name"]: q for q in default["queues"]}
    assert {"qa", "qb", "celery"} <= set(by_name)
    assert WA in by_name["qa"]["consumers"] and WB in by_name["qb"]["consumers"]
    await call(mcp, "purge_queue", queue="qidle", confirm=True)


async def test_purge_queue_really_empties_it(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    for priority in (0, 3, 9, None, None):
        send(cluster, "demo.noop", queue="qpurge", priority=priority)
    assert llen_all(cluster, "qpurge") == 5
    dry = await call(mcp, "purge_queue", queue="qpurge")
    assert (
        not dry["executed"] and dry["messages_before"] == 5 and "would delete 5" in dry["message"]
    )
    assert llen_all(cluster, "qpurge") == 5
    done = await call(mcp, "purge_queue", queue="qpurge", confirm=True)
    assert done["executed"] and done["removed"] == 5 and done["remaining"] == 0
    assert llen_all(cluster, "qpurge") == 0
    text = await call_error(mcp, "purge_queue", queue=f"{WA}.celery.pidbox", confirm=True)
    assert "invalid_argument" in text and "mailbox" in text


async def test_rate_limit_really_spaces_task_starts(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    out = await control(mcp, WA, "rate_limit", task_name="demo.noop", rate="2/s")
    assert out["ok"] == 1 and "rate limit" in out["replies"][0]["message"]
    try:
        results = [send(cluster, "demo.noop", queue="qa") for _ in range(5)]
        for r in results:
            r.get(timeout=20)
        done = sorted(AsyncResult(r.id, app=cluster.app).date_done for r in results)
        # 2/s with a bucket of 1: starts at least 0.5 s apart, so 4 gaps take >= 2 s.
        assert (done[-1] - done[0]).total_seconds() >= 1.6, done
        # workers list a rate-limited task as 'demo.noop [rate_limit=2/s]': names stay clean
        registered = await call(mcp, "get_registered_tasks", destination=[WA])
        assert "demo.noop" in registered["tasks"] and not [
            t for t in registered["tasks"] if "[" in t
        ]
    finally:
        await control(mcp, WA, "rate_limit", task_name="demo.noop", rate="0")


async def test_time_limit_really_stops_a_long_task(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    out = await control(mcp, WA, "time_limit", task_name="demo.sleep", hard=1)
    assert "apply to the next task started" in out["replies"][0]["message"]
    try:
        result = send(cluster, "demo.sleep", 30, queue="qa")
        await anyio.to_thread.run_sync(lambda: result.get(timeout=20, propagate=False))
        assert result.state == "FAILURE" and "TimeLimitExceeded" in repr(result.result)
    finally:
        await control(mcp, WA, "time_limit", task_name="demo.sleep")


async def test_pool_grow_and_shrink_change_the_pool(mcp: ClientSession, pair: list[Worker]) -> None:
    assert (await control(mcp, WB, "pool_grow", n=1))["ok"] == 1
    await wait_for(mcp, WB, lambda w: len(w["stats"]["pool_processes"]) == 3)
    assert (await control(mcp, WB, "pool_shrink", n=1))["ok"] == 1
    await wait_for(mcp, WB, lambda w: len(w["stats"]["pool_processes"]) == 2)


async def test_pool_restart_needs_confirm_then_replaces_processes(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    before = set((await info(mcp, WB))["stats"]["pool_processes"])
    dry = await call(mcp, "control_workers", command="pool_restart", destination=[WB])
    assert not dry["executed"] and WB in dry["message"] and dry["replies"] == []
    assert set((await info(mcp, WB))["stats"]["pool_processes"]) == before
    out = await control(mcp, WB, "pool_restart", confirm=True)
    assert out["ok"] == 1
    # each process is replaced after its next task (Celery wakes one with a no-op task):
    # keep both busy until every pid is new

    async def busy_then_inspect() -> dict[str, Any]:
        for _ in range(2):
            send(cluster, "demo.sleep", 0.3, queue="qb")
        return await info(mcp, WB)

    await until(
        busy_then_inspect,
        lambda w: (
            len(w["stats"]["pool_processes"]) == 2
            and not before & set(w["stats"]["pool_processes"])
        ),
    )


async def test_autoscale_applies_and_unsupported_commands_reply_errors(
    mcp: ClientSession, pair: list[Worker]
) -> None:
    out = await control(mcp, WA, "autoscale", max=4, min=2)
    assert out["ok"] == 1 and "max=4" in out["replies"][0]["message"]
    assert (await info(mcp, WA))["stats"]["autoscale"] == {"max": 4, "min": 2}
    await control(mcp, WA, "autoscale", max=3, min=2)
    refused = await call(
        mcp, "control_workers", command="autoscale", max=2, min=1, destination=[WB]
    )
    assert refused["errors"] == 1 and "Autoscale not enabled" in refused["replies"][0]["message"]
    grow = await call(mcp, "control_workers", command="pool_grow", destination=[WA])
    assert grow["errors"] == 1 and not grow["replies"][0]["ok"]


async def test_add_and_cancel_consumer(
    mcp: ClientSession, pair: list[Worker], cluster: Cluster
) -> None:
    await control(mcp, WB, "add_consumer", queue="qextra")
    await wait_for(mcp, WB, lambda w: "qextra" in w["queues"])
    result = send(cluster, "demo.add", 2, 2, queue="qextra")
    assert result.get(timeout=15) == 4
    assert (await call(mcp, "get_status", task_id=result.id))["worker"] == WB
    await control(mcp, WB, "cancel_consumer", queue="qextra")
    await wait_for(mcp, WB, lambda w: w["queues"] == ["qb"])


async def test_control_arguments_are_validated_per_command(mcp: ClientSession) -> None:
    text = await call_error(mcp, "control_workers", command="rate_limit", task_name="demo.add")
    assert "invalid_argument" in text and "rate_limit takes task_name, rate" in text
    assert "missing rate" in text
    text = await call_error(mcp, "control_workers", command="pool_grow", queue="qa")
    assert "unexpected queue" in text
    text = await call_error(
        mcp, "control_workers", command="time_limit", task_name="demo.add", soft=5, hard=1
    )
    assert "soft <= hard" in text
    assert "rate" in await call_error(
        mcp, "control_workers", command="rate_limit", task_name="demo.add", rate="fast"
    )


async def test_shutdown_really_stops_the_worker(
    mcp: ClientSession, env: dict[str, str], data_dir: Path
) -> None:
    with started_workers(env, data_dir, {"hostname": "wdown@%h", "extra": QUICK}) as (w,):
        host = f"wdown@{HOST}"
        # a generous reply wait: a worker that just started may answer slowly on a loaded box
        dry = await call(mcp, "shutdown_workers", destination=[host], timeout_s=5)
        assert not dry["executed"] and dry["targets"] == [host], dry
        assert w.proc.poll() is None
        out = await call(mcp, "shutdown_workers", destination=[host], confirm=True, timeout_s=5)
        assert out["executed"] and out["stopped"] == [host] and out["stopping"] == []
        code = await anyio.to_thread.run_sync(lambda: w.proc.wait(timeout=20))
        assert code == 0
        after = await call(mcp, "ping_workers", destination=[host])
        assert after["active_workers"] == [] and after["missing"][0]["reason"] == "unknown"


async def test_inspect_reports_frozen_then_killed_worker_missing_within_bound(
    mcp: ClientSession, env: dict[str, str], data_dir: Path, cluster: Cluster, pair: list[Worker]
) -> None:
    with started_workers(env, data_dir, {"hostname": "wkill@%h", "extra": QUICK}) as (w,):
        host = f"wkill@{HOST}"
        try:
            w.kill(signal.SIGSTOP)  # frozen: connected but silent, costs the timeout
            out = await call(mcp, "inspect_workers", timeout_s=1)
            (gone,) = [m for m in out["missing"] if m["hostname"] == host]
            assert gone["reason"] == "no_reply" and "1s" in gone["detail"]
            assert out["timeout_s"] == 1 and 900 <= out["elapsed_ms"] < 6000
            assert {WA, WB} <= {x["hostname"] for x in out["workers"]}
            w.kill(signal.SIGKILL)  # killed: the broker drops its connection at once
            await anyio.to_thread.run_sync(lambda: w.proc.wait(timeout=10))
            out = await call(mcp, "inspect_workers", timeout_s=2)
            (gone,) = [m for m in out["missing"] if m["hostname"] == host]
            assert gone["reason"] == "disconnected" and out["elapsed_ms"] < 2000
            assert {WA, WB} <= {x["hostname"] for x in out["workers"]}
            ping = await call(mcp, "ping_workers", destination=[host, WA], timeout_s=2)
            assert [x["hostname"] for x in ping["active_workers"]] == [WA]
            assert ping["missing"][0]["hostname"] == host and ping["elapsed_ms"] < 2000
        finally:
            w.kill(signal.SIGCONT)
            # a killed worker leaves its mailbox binding; remove it so later tests see none
            cluster.broker_redis.srem(
                "_kombu.binding.celery.pidbox", f"\x06\x16\x06\x16{host}.celery.pidbox"
            )


async def test_cli_action_ping(env: dict[str, str], pair: list[Worker]) -> None:
    code, out = await anyio.to_thread.run_sync(
        lambda: run_cli({**env, "CELERY_MCP_INSPECT_TIMEOUT_S": "3"}, "--action", "ping")
    )
    assert code == 0 and {WA, WB} <= {w["hostname"] for w in out["active_workers"]}, out


# -- AMQP (RabbitMQ): runs where `rabbitmq-server` is installed (apt-get install rabbitmq-server)

RABBIT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private RabbitMQ node on a free loopback port; yields its amqp:// URL."""
    if not RABBIT.exists():
        pytest.skip("rabbitmq-server is not installed")
    base = tmp_path_factory.mktemp("rabbit")
    (base / "plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text("loopback_users = none\n")
    port = free_port()
    env = dict(os.environ) | {
        "RABBITMQ_NODENAME": f"celery_mcp_{os.getpid()}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "HOME": str(base),
    }
    with open(base / "server.out", "ab") as out:
        proc = subprocess.Popen(
            [str(RABBIT)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def accepting() -> bool:
            assert proc.poll() is None, (base / "server.out").read_text()[-2000:]
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(accepting, 60, 0.2, "rabbitmq listening")
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def test_amqp_queue_lengths_purge_and_targeted_inspect(
    rabbit: str, env: dict[str, str], data_dir: Path, embedded: Any
) -> None:
    amqp_env = env | {
        "CELERY_MCP_BROKER_URL": rabbit,
        "CELERY_MCP_RESULT_BACKEND": embedded.url_for_db(3),
    }
    spec = {"hostname": "wamqp@%h", "queues": "qamqp", "extra": QUICK}
    with started_workers(amqp_env, data_dir, spec):
        host = f"wamqp@{HOST}"
        app = Cluster(resolve(Settings(data_dir=data_dir, broker_url=rabbit))).app
        for _ in range(3):
            app.send_task("demo.noop", queue="qamqp_idle")
        async with mcp_session(amqp_env) as session:
            out = await call(session, "queue_lengths", queues=["qamqp_idle", "qamqp", "nope"])
            by_name = {q["name"]: q for q in out["queues"]}
            assert out["broker"] == "amqp" and by_name["qamqp_idle"]["messages"] == 3
            assert by_name["qamqp"]["consumer_count"] == 1 and by_name["qamqp"]["consumers"] == [
                host
            ]
            assert not by_name["nope"]["exists"]
            dry = await call(session, "purge_queue", queue="qamqp_idle")
            assert not dry["executed"] and dry["messages_before"] == 3
            done = await call(session, "purge_queue", queue="qamqp_idle", confirm=True)
            assert done["removed"] == 3 and done["remaining"] == 0
            text = await call_error(session, "purge_queue", queue="nope", confirm=True)
            assert "not_found" in text
            # named workers: returns as soon as they answered, no count needed
            inspected = await call(session, "inspect_workers", destination=[host], timeout_s=5)
            assert inspected["workers"][0]["queues"] == ["qamqp"]
            assert inspected["elapsed_ms"] < 5000 and inspected["missing"] == []


def test_more_concurrent_broadcasts_than_pooled_connections_all_answer(
    cluster: Cluster, worker: Worker
) -> None:
    """Each broadcast holds one of the app's pooled connections (broker_pool_limit, 10) and
    publishes on it: Celery's mailbox would take a second one from the same pool, so 10 of them
    at once waited for each other for ever (50 concurrent send_task calls did it)."""
    import threading

    limit = int(cluster.app.conf.broker_pool_limit)
    answers: list[Any] = []
    threads = [  # daemons: a deadlocked one must not hold the test run at exit
        threading.Thread(
            target=lambda: answers.append(discovery.request(cluster, "ping")), daemon=True
        )
        for _ in range(limit * 3)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert len(answers) == len(threads), f"{len(threads) - len(answers)} broadcasts never returned"
    name = worker.hostname.split("@")[0]
    assert all(any(h.startswith(name) for h in a.by_worker) for a in answers)


def test_calls_that_find_the_queue_census_stale_share_one_broadcast(
    cluster: Cluster, worker: Worker
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cluster.queue_census = None
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: discovery.active_queues(cluster), range(20)))
    assert all(a is answers[0] for a in answers)  # one census, read by all twenty
    assert answers[0].by_worker
