"""Every toolset on the three deployments users run: the embedded Valkey, RabbitMQ with a Redis
result backend, and RabbitMQ with rpc:// (the seed's advanced configuration).

Each deployment runs a stock `celery worker` (with -E) of the user's app `tests/apps/user_app.py`,
a `celery-mcp monitor`, and the server with `--app` of that app over real stdio; RabbitMQ is a
private node (`tests.rabbit`). On amqp + rpc:// nothing is configured for the project's own
state: it goes to the embedded Valkey, as it does for a user.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection
from mcp import ClientSession

from celery_mcp import CelerySkill
from celery_mcp.config import Settings
from celery_mcp.runtime.connect import open_cluster
from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service import discovery
from celery_mcp.service.cluster import Cluster
from tests.rabbit import RabbitNode
from tests.support import (
    Beat,
    Worker,
    call,
    call_error,
    mcp_session,
    started_monitor,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.anyio

APP = "tests.apps.user_app:app"
PRIORITY_QUEUE = "prio-q"
DEPLOYMENTS = ["valkey", "amqp+redis", "amqp+rpc"]
DBS = {"valkey": (30, 31), "amqp+redis": (None, 32), "amqp+rpc": (None, None)}
LOG_DB = 33  # where the tasks of user_app log what they did


@dataclass
class Deployment:
    """One broker/backend combination and the processes running on it."""

    name: str
    env: dict[str, str]
    broker_url: str
    backend_url: str
    rabbit: RabbitNode | None
    data_dir: Path
    log_key: str

    @property
    def amqp(self) -> bool:
        return self.rabbit is not None

    @property
    def rpc(self) -> bool:
        return self.backend_url == "rpc://"

    def cluster(self) -> Cluster:
        """This test process's own view of the deployment (the project's own app: the user's
        app module is one object per process, already pointed at another deployment)."""
        settings = Settings(
            data_dir=self.data_dir, broker_url=self.broker_url, result_backend=self.backend_url
        )
        return open_cluster(settings)

    def worker(self, name: str, **kw: Any) -> Worker:
        hostname = f"{name}-{self.name.replace('+', '-')}@%h"
        return Worker(self.env, hostname, app=APP, log_dir=self.data_dir, **kw)


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def deployment(
    request: pytest.FixtureRequest, env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> Iterator[Deployment]:
    name: str = request.param
    rabbit: RabbitNode | None = request.getfixturevalue("rabbit") if "amqp" in name else None
    broker_db, backend_db = DBS[name]
    broker = embedded.url_for_db(broker_db) if rabbit is None else rabbit.url
    backend = "rpc://" if backend_db is None else embedded.url_for_db(backend_db)
    log_key = f"log-{name}"
    denv = env | {
        "USER_BROKER_URL": broker,
        "USER_RESULT_BACKEND": backend,
        "USER_LOG_URL": embedded.url_for_db(LOG_DB),
        "USER_LOG_KEY": log_key,
        "USER_PRIORITY_QUEUES": PRIORITY_QUEUE,
        "CELERY_MCP_APP": APP,
    }
    d = Deployment(name, denv, broker, backend, rabbit, data_dir, log_key)
    worker = d.worker("main", queues="celery", extra=["-E"]).wait_ready(60)
    try:
        with started_monitor(denv, data_dir):
            yield d
    finally:
        worker.stop()


@pytest.fixture(scope="module")
async def s(deployment: Deployment) -> AsyncIterator[ClientSession]:
    async with mcp_session(deployment.env, "--toolsets", "all") as session:
        yield session


def logged(d: Deployment) -> list[str]:
    client = redis.Redis.from_url(d.env["USER_LOG_URL"], decode_responses=True)
    return list(client.lrange(d.log_key, 0, -1))


# -- tasks -----------------------------------------------------------------------------------


async def test_results_status_and_failures(deployment: Deployment, s: ClientSession) -> None:
    sent = await call(s, "send_task", task_name="user.add", args=[2, 3])
    got = await call(s, "get_result", task_id=sent["task_id"], timeout_s=15)
    assert got["success"] and got["result"] == 5
    status = await call(s, "get_status", task_id=sent["task_id"])
    # no result_extended: the name and arguments come from the history of what was sent
    assert status["status"] == "SUCCESS" and status["task_name"] == "user.add"
    assert status["args"] == [2, 3]
    failed = await call(s, "send_task", task_name="user.fail", args=["boom"])
    got = await call(s, "get_result", task_id=failed["task_id"], timeout_s=15)
    assert got["status"] == "FAILURE" and "RuntimeError: boom x1" in got["error"]
    assert "Traceback" in got["traceback"]


async def test_a_result_is_read_again_by_another_process(
    deployment: Deployment, s: ClientSession
) -> None:
    """The CLI reads what the server sent (on rpc://: from the state store the drain fills)."""
    sent = await call(s, "send_task", task_name="user.add", args=[20, 22])
    await call(s, "get_result", task_id=sent["task_id"], timeout_s=15)
    out = subprocess.run(
        [sys.executable, "-m", "celery_mcp", "--action", "get_result", "--task-id",
         sent["task_id"], "--timeout-s", "5"],
        env=deployment.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and '"result": 42' in out.stdout, out.stdout + out.stderr


async def test_pending_revoked_and_unknown_ids(deployment: Deployment, s: ClientSession) -> None:
    sent = await call(s, "send_task", task_name="user.add", args=[1, 1], countdown=60)
    status = await call(s, "get_status", task_id=sent["task_id"])
    assert status["status"] == "PENDING"
    revoked = await call(s, "revoke", task_id=sent["task_id"])
    assert revoked["executed"] and "1 worker(s) acknowledged" in revoked["message"]
    unknown = f"never-sent-{uuid.uuid4().hex[:8]}"
    if deployment.rpc:
        error = await call_error(s, "get_result", task_id=unknown, timeout_s=1)
        assert "result_not_visible:" in error and "rpc://" in error
    else:
        got = await call(s, "get_result", task_id=unknown, timeout_s=0)
        assert got["status"] == "PENDING" and got["timed_out"]


async def test_health_says_where_state_and_results_are(
    deployment: Deployment, s: ClientSession
) -> None:
    health = await call(s, "health")
    assert health["ok"], health
    assert health["state_store"]["ok"] and "task history" in health["state_store"]["detail"]
    if deployment.rpc:
        assert "rpc:// results" in health["state_store"]["detail"]
        assert "not visible" in health["backend"]["detail"]


# -- workers and queues ----------------------------------------------------------------------


async def test_workers_queues_and_control(deployment: Deployment, s: ClientSession) -> None:
    ping = await call(s, "ping_workers")
    names = [w["hostname"] for w in ping["active_workers"]]
    assert any(n.startswith("main-") for n in names) and not ping["missing"]
    inspected = await call(s, "inspect_workers")
    assert inspected["counts"]["workers"] >= 1 and not inspected["missing"]
    registered = await call(s, "get_registered_tasks")
    assert "user.add" in registered["tasks"]
    ctl = await call(s, "control_workers", command="rate_limit", task_name="user.add", rate="99/s")
    assert ctl["ok"] >= 1
    parked = f"parked-{uuid.uuid4().hex[:6]}"
    await call(s, "send_task", task_name="user.add", args=[1, 1], queue=parked)
    depth = (await call(s, "queue_lengths", queues=[parked]))["queues"][0]
    assert depth["messages"] == 1 and not depth["consumers"]
    found = await call(s, "diagnose")
    orphans = [f for f in found["findings"] if f["check"] == "queue_without_consumer"]
    assert any(f["evidence"]["queue"] == parked for f in orphans), found
    purged = await call(s, "purge_queue", queue=parked, confirm=True)
    assert purged["removed"] == 1


async def test_a_cleanly_stopped_worker_is_not_missing_for_ever(
    deployment: Deployment, s: ClientSession
) -> None:
    extra = deployment.worker("brief", queues=f"brief-{uuid.uuid4().hex[:4]}").wait_ready(60)
    deadline = time.monotonic() + 10
    while extra.hostname.split("@")[0] not in str(
        (await call(s, "ping_workers"))["active_workers"]
    ):
        assert time.monotonic() < deadline, "a new worker is not found"  # (AMQP: by its reply)
    extra.stop()

    async def forgotten() -> bool:
        missing = (await call(s, "ping_workers"))["missing"]
        return not any(m["hostname"].startswith("brief-") for m in missing)

    deadline = time.monotonic() + 10
    while not await forgotten():  # at most one ping reports it (when no event said offline)
        assert time.monotonic() < deadline, "a stopped worker stays missing"


def test_amqp_census_tells_connected_workers_from_gone_ones(deployment: Deployment) -> None:
    """RabbitMQ: the mailbox queue of a connected worker is locked, a gone one's is deleted."""
    if not deployment.amqp:
        pytest.skip("the Redis census is covered by test_workers")
    cluster = deployment.cluster()
    first = discovery.request(cluster, "ping")  # the first broadcast: a roll call
    main = next(n for n in first.by_worker if n.startswith("main-"))
    cluster.workers_seen = cluster.workers_seen | {"gone-worker@nowhere"}
    census = discovery.census(cluster)
    assert census is not None and main in census.registered
    assert census.connected == len(census.registered) - 1  # the gone one
    replies = discovery.request(cluster, "ping", census_=census)
    assert main in replies.by_worker and replies.timeout_s == cluster.settings.inspect_timeout_s
    assert [m.hostname for m in replies.missing] == ["gone-worker@nowhere"]
    assert "gone-worker@nowhere" not in cluster.workers_seen  # reported once, then forgotten
    cluster.close()


# -- workflows -------------------------------------------------------------------------------


async def test_chain_group_and_chord(deployment: Deployment, s: ClientSession) -> None:
    step = {"task_name": "user.add"}
    chain = await call(s, "chain_tasks", steps=[step | {"args": [1, 2]}, step | {"args": [3]}])
    got = await call(s, "get_result", task_id=chain["workflow_id"], timeout_s=15)
    assert got["success"] and got["result"] == 6
    group = await call(s, "group_tasks", tasks=[step | {"args": [1, 2]}, step | {"args": [3, 4]}])
    got = await call(s, "get_result", task_id=group["workflow_id"], timeout_s=15)
    assert got["success"] and got["result"] == [3, 7]
    header = [step | {"args": [1, 2]}, step | {"args": [3, 4]}]
    chord = await call(
        s, "chord_workflow", header=header, callback={"task_name": "user.total", "args": [100]}
    )
    got = await call(s, "get_result", task_id=chord["workflow_id"], timeout_s=15)
    assert got["success"] and got["result"] == 110, got
    tree = await call(s, "get_workflow", workflow_id=chord["workflow_id"])
    assert tree["status"] == "SUCCESS" and tree["counts"] == {"SUCCESS": 3}


async def test_a_chord_with_a_failed_header_fails_its_callback(
    deployment: Deployment, s: ClientSession
) -> None:
    header = [{"task_name": "user.add", "args": [1, 2]}, {"task_name": "user.fail", "args": ["x"]}]
    chord = await call(s, "chord_workflow", header=header, callback={"task_name": "user.total"})
    got = await call(s, "get_result", task_id=chord["workflow_id"], timeout_s=15)
    assert got["status"] == "FAILURE" and "ChordError" in got["error"], got
    assert "RuntimeError" in got["error"]


# -- schedules and beat ----------------------------------------------------------------------


async def test_periodic_task_runs_under_beat(deployment: Deployment, s: ClientSession) -> None:
    beat = Beat(deployment.env, deployment.data_dir)
    name = f"tick-{deployment.name.replace('+', '-')}-{uuid.uuid4().hex[:4]}"
    tag = f"tick:{name}"
    try:
        await call(s, "add_periodic_task", name=name, task_name="user.record", args=[tag], every=1)

        async def ran() -> dict[str, Any] | None:
            entry = await call(s, "get_periodic_task", name=name)
            return entry if entry["total_run_count"] >= 2 and entry["last_task_id"] else None

        deadline = time.monotonic() + 20
        while (entry := await ran()) is None:
            assert beat.proc.poll() is None, beat.log()
            assert time.monotonic() < deadline, beat.log()
        wait_until(lambda: logged(deployment).count(tag) >= 2, 10, what="two runs done")
        got = await call(s, "get_result", task_id=entry["last_task_id"], timeout_s=10)
        assert got["success"] and got["result"] == tag  # beat's results are readable (rpc:// too)
    finally:
        await call(s, "remove_periodic_task", name=name, confirm=True)
        beat.stop()


# -- history ---------------------------------------------------------------------------------


async def test_history_records_and_retries(deployment: Deployment, s: ClientSession) -> None:
    failed = await call(s, "send_task", task_name="user.fail", args=[f"h-{deployment.name}"])
    await call(s, "get_result", task_id=failed["task_id"], timeout_s=15)

    async def recorded() -> dict[str, Any] | None:
        task = await call(s, "get_task", task_id=failed["task_id"])
        return task if task["status"] == "FAILURE" and task.get("worker") else None

    deadline = time.monotonic() + 15
    while (task := await recorded()) is None:
        assert time.monotonic() < deadline, "the monitor did not record the failure"
    assert task["worker"].startswith("main-")
    retried = await call(s, "retry_task", task_id=failed["task_id"])
    again = await call(s, "get_result", task_id=retried["new_task_id"], timeout_s=15)
    assert again["status"] == "FAILURE"


# -- the Python facade -----------------------------------------------------------------------


def test_facade_on_the_deployment(deployment: Deployment) -> None:
    skill = CelerySkill(  # the seed's way: URLs only, the tasks are the live worker's
        broker_url=deployment.broker_url,
        result_backend=deployment.backend_url,
        data_dir=deployment.data_dir,
    )
    try:
        sent = skill.task_manager().send_task("user.add", args=[4, 5])
        assert skill.task_manager().get_result(sent["task_id"], timeout=15)["result"] == 9
        chain = skill.workflow().chain_tasks(("user.add", [1, 1]), ("user.add", [1]))
        assert chain.get(timeout=15) == 3
        chord = skill.workflow().chord_workflow([("user.add", [1, 1])], ("user.total", []))
        assert chord.get(timeout=15) == 2
    finally:
        skill.close()


def test_facade_local_queue_goes_away_with_it(deployment: Deployment) -> None:
    if not deployment.amqp:
        pytest.skip("a Redis list is gone once empty")
    skill = CelerySkill(
        broker_url=deployment.broker_url, result_backend=deployment.backend_url,
        data_dir=deployment.data_dir,
    )  # fmt: skip
    name = f"local.double_{deployment.name.replace('+', '_')}"  # one Celery registry per process
    skill.register_task(lambda x: x * 2, name)
    skill.start_worker(concurrency=1)
    sent = skill.task_manager().send_task(name, args=[21])
    got = skill.task_manager().get_result(sent["task_id"], timeout=15)
    assert got["result"] == 42, got
    queue = skill.local_queue
    skill.close()
    with Connection(deployment.broker_url) as conn:
        channel = conn.channel()
        with pytest.raises(Exception, match="NOT_FOUND"):
            channel.queue_declare(queue, passive=True)


# -- RabbitMQ only ---------------------------------------------------------------------------


async def test_priority_on_rabbitmq(deployment: Deployment, s: ClientSession) -> None:
    """9 first on a queue with x-max-priority; a warning where RabbitMQ ignores priority; a
    typed error where the broker's queue is declared otherwise than the app declares it."""
    if not deployment.amqp:
        pytest.skip("Redis priority is covered by test_user_cluster")
    plain = await call(s, "send_task", task_name="user.add", args=[1, 1], priority=5)
    assert plain["warnings"] and "x-max-priority" in plain["warnings"][0]
    tags = [f"p{p}-{i}-{deployment.name}" for i in range(3) for p in (0, 9)]
    for tag in tags:
        sent = await call(
            s, "send_task", task_name="user.record", args=[tag], queue=PRIORITY_QUEUE,
            priority=int(tag[1]),
        )  # fmt: skip
        # no priority warning; only that no worker consumes the queue yet (it starts below)
        assert [w for w in sent["warnings"] if "no live worker" not in w] == []
        assert any(PRIORITY_QUEUE in w for w in sent["warnings"])
    prio = deployment.worker("prio", queues=PRIORITY_QUEUE, concurrency=1).wait_ready(60)
    try:
        wait_until(lambda: len([t for t in logged(deployment) if t in tags]) == 6, 20)
    finally:
        prio.stop()
    order = [t for t in logged(deployment) if t in tags]
    assert [t[:2] for t in order] == ["p9"] * 3 + ["p0"] * 3, order
    mismatched = f"plain-{uuid.uuid4().hex[:4]}"
    with Connection(deployment.broker_url) as conn:
        conn.channel().queue_declare(mismatched, durable=True, auto_delete=False)
    env = deployment.env | {"USER_PRIORITY_QUEUES": f"{PRIORITY_QUEUE},{mismatched}"}
    async with mcp_session(env) as other:
        error = await call_error(
            other, "send_task", task_name="user.add", args=[1, 1], queue=mismatched, priority=1
        )
    assert "invalid_argument:" in error and "x-max-priority" in error, error
    assert mismatched in error


def test_worker_starts_on_an_external_broker_with_a_new_data_dir(
    deployment: Deployment, tmp_path: Path
) -> None:
    if not deployment.amqp:
        pytest.skip("the embedded broker creates its data dir")
    env = {k: v for k, v in deployment.env.items() if not k.startswith("CELERY_MCP_")} | {
        "CELERY_MCP_BROKER_URL": deployment.broker_url,
        "CELERY_MCP_DATA_DIR": str(tmp_path / "not" / "yet"),
    }
    worker = Worker(env, "fresh@%h", log_dir=tmp_path, queues="fresh-q").wait_ready(60)
    worker.stop()


def test_worker_stops_when_its_monitor_dies(deployment: Deployment, tmp_path: Path) -> None:
    if deployment.name != "amqp+rpc":
        pytest.skip("one deployment is enough")
    env = {k: v for k, v in deployment.env.items() if not k.startswith("CELERY_MCP_")} | {
        "CELERY_MCP_BROKER_URL": deployment.broker_url,
        "CELERY_MCP_DATA_DIR": str(deployment.data_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery_mcp", "worker", "--monitor", "--hostname", "watched@%h",
         "-Q", "watched-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:

        def monitor_pid() -> int | None:
            out = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "monitor"],
                                 capture_output=True, text=True)  # fmt: skip
            return int(out.stdout.split()[0]) if out.stdout.strip() else None

        pid = wait_until(monitor_pid, 30, 0.1, "the worker's monitor")
        time.sleep(1.0)  # the worker is up and running beside it
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(30) is not None
        assert proc.stderr is not None
        assert "the monitor exited (rc=-9); stopping" in proc.stderr.read().decode()
    finally:
        with contextlib.suppress(Exception):
            stop_process(proc, group=True)
