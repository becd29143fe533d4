"""send_task, batches, get_result and concurrency: MCP tool calls against raw Celery.

Latency rows publish to a queue no worker consumes (`bench.idle`, purged after), so a worker
busy running the tasks does not take the CPU from one side and not the other; get_result and
the concurrency rows use the default queue and a real worker.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from celery import group
from celery.result import AsyncResult
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from bench.harness import Row, Run, interleaved, p50, percentile, time_async, time_sync
from celery_mcp.config import Settings
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.funnel import implementation
from celery_mcp.service.registry import OPERATIONS

IDLE_QUEUE = "bench.idle"
FLOOR_ROW = "floor: bare MCPServer no-op tool"
#: celery_mcp's own share of a call, beyond raw Celery and the SDK's own floor (issue 22)
SEND_TARGET_MS = 0.5
FINISHED_RESULT_TARGET_MS = 0.3
ONE_CALL_WAIT_TARGET_MS = 0.5


async def floor_rows(run: Run) -> list[Row]:
    """The SDK's floor: a protocol ping and a bare MCPServer's no-op tool, over stdio."""
    n = run.n(500, 10)
    ping = await time_async(run.session.send_ping, n)
    params = StdioServerParameters(command=sys.executable, args=["-m", "bench.floor_server"])
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as floor,
        ):
            await floor.initialize()
            await time_async(lambda: floor.call_tool("noop", {}), 20)
            noop = await time_async(lambda: floor.call_tool("noop", {}), n)
    return [
        Row("floor: MCP ping (JSON-RPC over stdio)", p50(ping), note="no tool machinery"),
        Row(
            FLOOR_ROW,
            p50(noop),
            note="the SDK's own cost of a tool call (async tool + one thread hop, "
            "structured output); nothing of celery_mcp runs",
        ),
    ]


async def send_rows(run: Run) -> list[Row]:
    """send_task round trip p50/p95 and sequential rate, plain Celery app as a reference."""
    app = run.env.app
    n = run.n(1000, 10)
    args = {"task_name": "demo.noop", "queue": IDLE_QUEUE}
    for _ in range(run.n(50, 2)):
        await run.call("send_task", **args)
        app.send_task("demo.noop", queue=IDLE_QUEUE)
    raw, mcp = await interleaved(
        lambda: app.send_task("demo.noop", queue=IDLE_QUEUE),
        lambda: run.session.call_tool("send_task", args),
        n,
    )
    send = OPERATIONS["send_task"]
    cluster = Cluster(Settings(data_dir=run.env.data_dir), app=app)
    request = send.input_model.model_validate(args)
    service = time_sync(lambda: implementation(send)(cluster, request), n)
    plain_app = run.env.plain_app()
    plain_app.send_task("demo.noop", queue=IDLE_QUEUE)
    plain: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        plain_app.send_task("demo.noop", queue=IDLE_QUEUE)
        plain.append((time.perf_counter() - start) * 1e3)
    run.env.purge(IDLE_QUEUE)
    return [
        Row(
            "send_task p50",
            p50(mcp),
            p50(raw),
            note=f"raw = app.send_task on the same app (json, task-sent events on), same "
            f"broker, same queue; {n} each, alternated in 5 blocks",
        ),
        Row("send_task p95", percentile(mcp, 95), percentile(raw, 95)),
        Row(
            "send_task service call, no MCP (p50)",
            p50(service),
            p50(raw),
            note="celery_mcp.service.tasks.send_task in this process (name check, payload "
            "caps, publish): what celery_mcp adds before MCP",
        ),
        Row(
            "send_task sequential rate",
            1000 * len(mcp) / sum(mcp),
            1000 * len(raw) / sum(raw),
            unit="calls/s",
        ),
        Row(
            "reference: plain Celery app send_task p50",
            None,
            p50(plain),
            note="Celery('x', broker, backend) with default settings: no task-sent event, "
            "so one publish per send instead of two",
        ),
    ]


def _steps(count: int) -> list[dict[str, Any]]:
    return [{"task_name": "demo.noop", "queue": IDLE_QUEUE} for _ in range(count)]


async def batch_rows(run: Run) -> list[Row]:
    """N send_task calls against one batch call (group_tasks when present) and raw batches."""
    app = run.env.app
    count = run.n(100, 5)
    rounds = run.n(5, 1)
    mcp_each, raw_each, raw_batch, mcp_group = [], [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            await run.call("send_task", task_name="demo.noop", queue=IDLE_QUEUE)
        mcp_each.append((time.perf_counter() - start) * 1e3)

        start = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                app.send_task("demo.noop", queue=IDLE_QUEUE, producer=producer)
        raw_each.append((time.perf_counter() - start) * 1e3)

        start = time.perf_counter()
        sigs = [app.signature("demo.noop", queue=IDLE_QUEUE) for _ in range(count)]
        group(sigs).apply_async()
        raw_batch.append((time.perf_counter() - start) * 1e3)

        if "group_tasks" in run.tools:
            start = time.perf_counter()
            await run.call("group_tasks", tasks=_steps(count))
            mcp_group.append((time.perf_counter() - start) * 1e3)
    run.env.purge(IDLE_QUEUE)
    rows = [
        Row(
            f"{count} sends, one call each",
            p50(mcp_each),
            p50(raw_each),
            note="raw reuses one producer (one connection) for the whole batch",
        )
    ]
    if mcp_group:
        rows.append(
            Row(
                f"{count} sends in one call (group_tasks)",
                p50(mcp_group),
                p50(raw_batch),
                note=f"raw = group(...).apply_async(); per task: MCP "
                f"{p50(mcp_group) / count:.2f} ms batched vs {p50(mcp_each) / count:.2f} ms "
                "one call each. group_tasks is the batch path, so no send_many tool",
            )
        )
    else:
        rows.append(Row(f"{count} sends, raw group(...).apply_async()", None, p50(raw_batch)))
    return rows


async def result_rows(run: Run, floor_ms: float | None = None) -> list[Row]:
    """send + get_result of a no-op task against send + AsyncResult.get, and a finished one;
    the targets are over raw Celery plus the SDK's floor (`floor_ms`, the bare no-op tool)."""
    app = run.env.app
    n = run.n(200, 5)

    def raw_round_trip() -> None:
        app.send_task("demo.noop").get(timeout=10)

    async def mcp_round_trip() -> None:
        sent = await run.call("send_task", task_name="demo.noop")
        result = await run.call("get_result", task_id=sent["task_id"], timeout_s=10)
        assert result["success"], result

    for _ in range(run.n(10, 1)):
        raw_round_trip()
        await mcp_round_trip()
    raw, mcp = await interleaved(raw_round_trip, mcp_round_trip, n)

    async def mcp_one_call() -> None:
        sent = await run.call("send_task", task_name="demo.noop", wait_s=10)
        assert sent["outcome"]["success"], sent

    raw_one, mcp_one = await interleaved(raw_round_trip, mcp_one_call, n)

    sleep_s = 0.1

    def raw_sleep() -> None:
        app.send_task("demo.sleep", args=[sleep_s]).get(timeout=10)

    async def mcp_sleep() -> None:
        sent = await run.call("send_task", task_name="demo.sleep", args=[sleep_s])
        await run.call("get_result", task_id=sent["task_id"], timeout_s=10)

    raw_wait, mcp_wait = await interleaved(raw_sleep, mcp_sleep, run.n(30, 2))

    done = app.send_task("demo.noop")
    done.get(timeout=10)
    raw_done, mcp_done = await interleaved(
        lambda: AsyncResult(done.id, app=app).get(timeout=10),
        lambda: run.session.call_tool("get_result", {"task_id": done.id, "timeout_s": 10}),
        n,
    )
    return [
        Row(
            "send + get_result, no-op task, p50",
            p50(mcp),
            p50(raw),
            note="MCP: two tool calls (send_task, get_result); raw: send_task().get(). Both "
            "wait by Redis pub/sub (SUBSCRIBE celery-task-meta-<id>, then GET to close the "
            "race), not by polling",
        ),
        Row("send + get_result, no-op task, p95", percentile(mcp, 95), percentile(raw, 95)),
        _over_floor(
            "send + wait in one call: send_task(wait_s), no-op task, p50",
            mcp_one,
            raw_one,
            floor_ms,
            ONE_CALL_WAIT_TARGET_MS,
            f"one agent step instead of two; {n} each, alternated with raw send_task().get()",
        ),
        _over_floor(
            "get_result of a finished task p50",
            mcp_done,
            raw_done,
            floor_ms,
            FINISHED_RESULT_TARGET_MS,
            f"{n} each, alternated; raw = AsyncResult(id).get()",
        ),
        Row(
            f"send + get_result of a {sleep_s * 1e3:.0f} ms task, minus {sleep_s * 1e3:.0f} ms",
            p50(mcp_wait) - sleep_s * 1e3,
            p50(raw_wait) - sleep_s * 1e3,
            note="what waiting costs beyond the task itself: the result arrives by pub/sub "
            "the moment the worker stores it, so no polling interval is added",
        ),
    ]


def _over_floor(
    name: str,
    mcp: list[float],
    raw: list[float],
    floor_ms: float | None,
    target_ms: float,
    note: str,
) -> Row:
    """A row whose target is MCP <= raw + the SDK's floor + `target_ms`."""
    over = None if floor_ms is None else p50(mcp) - p50(raw) - floor_ms
    return Row(
        name,
        p50(mcp),
        p50(raw),
        target=f"<= raw + floor + {target_ms:g} ms",
        ok=None if over is None else over <= target_ms,
        note=note + ("" if over is None else f"; MCP - raw - floor = {over:.2f} ms"),
    )


async def concurrency_rows(run: Run) -> list[Row]:
    """50 concurrent tool calls while one get_result waits on a 2 s task."""
    app = run.env.app
    calls = run.n(50, 5)
    sleeper = await run.call("send_task", task_name="demo.sleep", args=[2])
    mcp_ms: list[float] = []
    waited: dict[str, Any] = {}

    async def one() -> None:
        start = time.perf_counter()
        await run.call("send_task", task_name="demo.noop", queue=IDLE_QUEUE)
        mcp_ms.append((time.perf_counter() - start) * 1e3)

    async def waiter() -> None:
        waited.update(await run.call("get_result", task_id=sleeper["task_id"], timeout_s=10))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.2)
        start = time.perf_counter()
        async with anyio.create_task_group() as burst:
            for _ in range(calls):
                burst.start_soon(one)
        mcp_wall = (time.perf_counter() - start) * 1e3
    assert waited.get("success"), waited

    raw_sleeper = app.send_task("demo.sleep", args=[2])
    with ThreadPoolExecutor(calls + 1) as pool:
        pending = pool.submit(raw_sleeper.get, timeout=10)
        time.sleep(0.2)
        start = time.perf_counter()
        list(pool.map(lambda _: app.send_task("demo.noop", queue=IDLE_QUEUE), range(calls)))
        raw_wall = (time.perf_counter() - start) * 1e3
        pending.result()
    run.env.purge(IDLE_QUEUE)
    return [
        Row(
            f"{calls} concurrent send_task, one get_result waiting: wall",
            mcp_wall,
            raw_wall,
            note=f"raw: {calls} threads on one app; MCP p50 per call {p50(mcp_ms):.1f} ms, "
            f"max {max(mcp_ms):.1f} ms; the waiting get_result did not hold them up",
        )
    ]


def share_row(out: list[Row]) -> Row | None:
    """What celery_mcp itself adds to send_task: MCP-raw minus the SDK's no-op tool floor."""
    by_name = {r.name: r for r in out}
    floor, send = by_name.get(FLOOR_ROW), by_name.get("send_task p50")
    if not (floor and send and floor.mcp is not None and send.mcp is not None and send.raw):
        return None
    ours = send.mcp - send.raw - floor.mcp
    return Row(
        "send_task: celery_mcp's share of MCP-raw",
        ours,
        target=f"<= {SEND_TARGET_MS:g} ms",
        ok=ours <= SEND_TARGET_MS,
        note="send_task p50 MCP-raw minus the bare no-op tool: the tool wrapper (argument "
        "model, thread hop under a bound), larger arguments and results, and three busy "
        "processes (client, server, Valkey) sharing the CPUs where raw has two",
    )


async def rows(run: Run) -> list[Row]:
    out: list[Row] = []
    for section in (floor_rows, send_rows, batch_rows):
        out += await section(run)
        share = share_row(out) if section is send_rows else None
        if share:
            out.append(share)
    floor = next((r.mcp for r in out if r.name == FLOOR_ROW), None)
    out += await result_rows(run, floor)
    out += await concurrency_rows(run)
    with contextlib.suppress(Exception):
        run.env.purge(IDLE_QUEUE)
    return out
