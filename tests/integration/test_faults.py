"""Faults with real processes: the broker killed, frozen and restarted; a worker killed mid-task.

Each test has its own data dir, so its own embedded Valkey, its own `celery-mcp worker` and its
own `celery-mcp serve` (official MCP client over stdio). Nothing is mocked: faults are signals
sent to the real valkey-server and worker processes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psutil
import pytest
from mcp import ClientSession

from celery_mcp.runtime import embedded as emb
from tests.support import Worker, call, error_text, mcp_session, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: Redis visibility timeout of these tests' workers and servers: an unacked task of a killed
#: worker is delivered again this long after its first delivery (Celery's default is 1 h).
VISIBILITY_S = 4
#: Longest any tool may take to answer while the broker is frozen.
FROZEN_BOUND_S = 3.0
#: Tools that answer a broken broker with data (`ok: false`) rather than isError.
DIAGNOSTIC_TOOLS = ("health", "diagnose")


@pytest.fixture
def fault_env(tmp_path: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Settings with a data dir (so an embedded Valkey) of this test alone."""
    data = tmp_path / "data"
    emb.ensure_running(data)
    yield env | {
        "CELERY_MCP_DATA_DIR": str(data),
        "CELERY_MCP_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
    }
    state = emb.read_state(data)
    if state:
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGCONT)  # never leave a frozen server behind
    emb.stop(data)


@contextlib.contextmanager
def running_worker(
    env: dict[str, str], hostname: str, log_dir: Path, **kw: Any
) -> Iterator[Worker]:
    worker = Worker(env, hostname, log_dir=log_dir, **kw)
    try:
        yield worker.wait_ready()
    finally:
        worker.stop()


def _data_dir(env: dict[str, str]) -> Path:
    return Path(env["CELERY_MCP_DATA_DIR"])


def _server(env: dict[str, str]) -> emb.EmbeddedServer:
    state = emb.read_state(_data_dir(env))
    assert state is not None
    return state


async def _wait_state(
    session: ClientSession, task_id: str, state: str, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = await call(session, "get_status", task_id=task_id)
        if status["status"] == state:
            return status
        assert time.monotonic() < deadline, f"{task_id} still {status['state']}, wanted {state}"
        await anyio.sleep(0.05)


async def test_sends_acknowledged_while_the_broker_is_killed_all_run(
    fault_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL the embedded server mid-stream, restart it: every send reported ok is executed."""
    data = _data_dir(fault_env)
    sent: list[tuple[str, int]] = []
    failed: list[str] = []
    durations: list[float] = []
    restarted = anyio.Event()
    with running_worker(fault_env, "steady@%h", tmp_path):
        async with mcp_session(fault_env) as session:

            async def sender() -> None:
                i = after_restart = 0
                while after_restart < 20:
                    start = time.monotonic()
                    result = await session.call_tool(
                        "send_task", {"task_name": "demo.add", "args": [i, 1]}
                    )
                    durations.append(time.monotonic() - start)
                    if result.is_error:
                        failed.append(error_text(result))
                    else:
                        assert result.structured_content is not None
                        sent.append((result.structured_content["task_id"], i + 1))
                    i += 1
                    after_restart += restarted.is_set()
                    await anyio.sleep(0.005)

            async def killer() -> None:
                await anyio.sleep(1.0)
                victim = _server(fault_env)
                os.kill(victim.pid, signal.SIGKILL)
                await anyio.to_thread.run_sync(
                    lambda: wait_until(lambda: not emb.ping(victim, 0.1), 5, what="server down")
                )
                await anyio.sleep(1.0)
                await anyio.to_thread.run_sync(emb.ensure_running, data)
                restarted.set()

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    tg.start_soon(killer)
            assert max(durations) < 5.0, f"a send took {max(durations):.1f}s"
            assert failed, "no send failed: the broker was not down while sending"
            # the same server process recovered: new sends succeed again
            after = await call(session, "send_task", task_name="demo.add", args=[40, 2])
            sent.append((after["task_id"], 42))
            for task_id, expected in sent:
                result = await call(session, "get_result", task_id=task_id, timeout_s=30)
                assert result["success"] and result["result"] == expected, (task_id, result)


def _example_arguments(tool: Any, task_id: str) -> dict[str, Any]:
    """Valid arguments for `tool` (its required fields from a table of examples)."""
    step = {"task_name": "demo.add", "args": [1, 2]}
    examples: dict[str, Any] = {
        "task_name": "demo.add",
        "task_id": task_id,
        "workflow_id": task_id,
        "queue": "celery",
        "steps": [step, {"task_name": "demo.add", "args": [3]}],
        "tasks": [step],
        "header": [step],
        "callback": {"task_name": "demo.xsum"},
        "items": [[1, 2]],
        "name": "fault-test-entry",
        "command": "pool_grow",
    }
    schema = tool.input_schema
    arguments = {name: examples[name] for name in schema.get("required", [])}
    if "args" in schema.get("properties", {}):
        arguments["args"] = [1, 2]
    if tool.name == "add_periodic_task":
        arguments["every"] = 60
    if tool.name == "get_result":
        arguments["timeout_s"] = 1
    return arguments


async def test_frozen_broker_every_tool_answers_within_3s_then_recovers(
    fault_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGSTOP valkey-server: each tool answers isError (health, diagnose: ok=false) in 3 s."""
    with running_worker(fault_env, "frozen@%h", tmp_path):
        async with mcp_session(fault_env, "--toolsets", "all") as session:
            tools = (await session.list_tools()).tools
            done = await call(session, "send_task", task_name="demo.add", args=[1, 1])
            await call(session, "get_result", task_id=done["task_id"], timeout_s=10)
            await call(session, "health")  # every client connection is open and warm
            server = _server(fault_env)
            answers: dict[str, tuple[float, bool, str]] = {}
            limiter = anyio.CapacityLimiter(4)  # a few at a time: the test stays short

            async def answer(tool: Any) -> None:
                arguments = _example_arguments(tool, done["task_id"])
                async with limiter:
                    start = time.monotonic()
                    with anyio.fail_after(30):
                        result = await session.call_tool(tool.name, arguments)
                    elapsed = time.monotonic() - start
                text = error_text(result) if result.is_error else str(result.structured_content)
                answers[tool.name] = (elapsed, result.is_error, text)

            os.kill(server.pid, signal.SIGSTOP)
            try:
                async with anyio.create_task_group() as tg:
                    for tool in tools:
                        tg.start_soon(answer, tool)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            slow = {name: round(a[0], 2) for name, a in answers.items() if a[0] >= FROZEN_BOUND_S}
            assert not slow, f"answered after {FROZEN_BOUND_S}s: {slow}"
            for name in DIAGNOSTIC_TOOLS:  # they report failures as data
                _, is_error, text = answers.pop(name)
                assert not is_error and "'ok': False" in text, (name, text)
            bad_arguments = {n: a[2] for n, a in answers.items() if "invalid_argument" in a[2]}
            assert not bad_arguments, bad_arguments
            succeeded = {name: a[2][:200] for name, a in answers.items() if not a[1]}
            assert not succeeded, f"answered as if the broker were fine: {succeeded}"

            async def recovered() -> dict[str, Any]:
                deadline = time.monotonic() + 15
                while True:
                    result = await session.call_tool(
                        "send_task", {"task_name": "demo.add", "args": [2, 2]}
                    )
                    if not result.is_error:
                        assert result.structured_content is not None
                        return dict(result.structured_content)
                    assert time.monotonic() < deadline, error_text(result)
                    await anyio.sleep(0.2)

            again = await recovered()
            result = await call(session, "get_result", task_id=again["task_id"], timeout_s=15)
            assert result["result"] == 4
            assert (await call(session, "health"))["ok"]


async def test_worker_killed_mid_task_gets_it_redelivered(
    fault_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL a whole worker running an acks_late task: another worker runs it again."""
    async with mcp_session(fault_env) as session:
        with running_worker(fault_env, "victim@%h", tmp_path, concurrency=1) as victim:
            sent = await call(session, "send_task", task_name="demo.sleep", args=[1.5])
            started = await _wait_state(session, sent["task_id"], "STARTED", 20)
            assert started["worker"].startswith("victim@")
            victim.kill(signal.SIGKILL)
            victim.proc.wait(10)
        with running_worker(fault_env, "rescuer@%h", tmp_path):
            result = await call(
                session, "get_result", task_id=sent["task_id"], timeout_s=VISIBILITY_S * 6
            )
            assert result["success"] and result["result"] == 1.5, result
            status = await call(session, "get_status", task_id=sent["task_id"])
            assert status["worker"].startswith("rescuer@")


async def test_pool_process_killed_mid_task_is_requeued_at_once(
    fault_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL only the pool process running the task: task_reject_on_worker_lost requeues it."""
    # Celery's 1 h visibility timeout: the task can only come back through the requeue.
    env = {k: v for k, v in fault_env.items() if k != "CELERY_MCP_VISIBILITY_TIMEOUT_S"}
    async with mcp_session(env) as session:
        with running_worker(env, "survivor@%h", tmp_path, concurrency=1) as worker:
            sent = await call(session, "send_task", task_name="demo.sleep", args=[1.5])
            await _wait_state(session, sent["task_id"], "STARTED", 20)
            children = psutil.Process(worker.proc.pid).children()
            assert len(children) == 1, children
            os.kill(children[0].pid, signal.SIGKILL)
            result = await call(session, "get_result", task_id=sent["task_id"], timeout_s=30)
            assert result["success"] and result["result"] == 1.5, result


async def test_results_survive_a_broker_restart(fault_env: dict[str, str], tmp_path: Path) -> None:
    """A stored result is still readable, by the same MCP server, after Valkey restarts."""
    data = _data_dir(fault_env)
    with running_worker(fault_env, "keeper@%h", tmp_path):
        async with mcp_session(fault_env) as session:
            sent = await call(session, "send_task", task_name="demo.add", args=[20, 22])
            first = await call(session, "get_result", task_id=sent["task_id"], timeout_s=10)
            assert first["result"] == 42
            before = _server(fault_env)
            await anyio.to_thread.run_sync(emb.stop, data)
            after = await anyio.to_thread.run_sync(emb.ensure_running, data)
            assert after.pid != before.pid
            again = await call(session, "get_result", task_id=sent["task_id"], timeout_s=5)
            assert again["success"] and again["result"] == 42
            status = await call(session, "get_status", task_id=sent["task_id"])
            assert status["status"] == "SUCCESS" and status["worker"].startswith("keeper@")


def test_a_group_whose_publish_stops_part_way_says_which_tasks_went_out(tmp_path: Path) -> None:
    """The broker freezes mid-group (results live on another server): the error counts what was
    published, and get_workflow marks the rest NOT_SENT, so a retry sends those only."""
    from celery_mcp import CelerySkill
    from celery_mcp.errors import BrokerUnavailable

    broker, results = emb.ensure_running(tmp_path / "b"), emb.ensure_running(tmp_path / "r")
    outcome: dict[str, Any] = {}
    try:
        with CelerySkill(
            broker_url=broker.url_for_db(0),
            result_backend=results.url_for_db(0),
            data_dir=tmp_path / "b",
            call_timeout_s=60,
        ) as skill:
            client = skill.cluster.broker_redis
            steps = [("demo.noop",)] * 1500

            def publish() -> None:
                try:
                    skill.workflow().group_tasks(*steps)
                except BrokerUnavailable as exc:
                    outcome["error"] = exc

            import threading

            thread = threading.Thread(target=publish)
            thread.start()
            wait_until(lambda: client.llen("celery") >= 100, 30, 0.001, "publishing started")
            os.kill(broker.pid, signal.SIGSTOP)
            thread.join(30)
            os.kill(broker.pid, signal.SIGCONT)
            error = outcome["error"]
            assert "were not sent" in error.message and "NOT_SENT" in str(error.hint)
            sent = int(error.message.split("published ")[1].split(" of ")[0])
            assert 100 <= sent < 1500
            queued = client.llen("celery")  # what it says went out is queued; the publish that
            assert queued in (sent, sent + 1), (queued, sent)  # failed may have been too
            workflow_id = error.message.split()[1].rstrip(":")
            tree = skill.workflow().get_workflow(workflow_id, status=["NOT_SENT"], limit=1)
            assert tree["counts"] == {"PENDING": sent, "NOT_SENT": 1500 - sent}
            assert tree["nodes"][0]["index"] == sent  # the first one not sent
            # results that subscribed while the backend was up go while it still is
            del error, tree
            outcome.clear()
            gc.collect()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker.pid, signal.SIGCONT)
        emb.stop(tmp_path / "b")
        emb.stop(tmp_path / "r")
