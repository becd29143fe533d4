"""Benchmark rows: resources, completions and task subscriptions (part of `python -m bench`).

- `resources/read celery://tasks/{id}` beside the `get_status` tool it mirrors;
- `completion/complete` of a task name (served from the cache: no broadcast per keystroke);
- notification latency: a task's `notifications/resources/updated` arrival after its
  `date_done` (the worker stored the result), one subscription at a time;
- 100 concurrent subscriptions: 100 tasks subscribed at once, each notified after it finished,
  and every result channel free after unsubscribing.

Subscriptions use their own `ClientSession` (protocol 2025-11-25) with a message handler; the
rest the run's warm session. Alone: `python -m bench.protocol` (its own private cluster).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import PromptReference, ResourceUpdatedNotification

from bench.harness import Row, Run, bench_env, p50, percentile, render, time_async, tool_ok


def _epoch(when: datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class _Arrivals:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.changed = anyio.Event()

    async def handle(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self.times.setdefault(str(message.params.uri), []).append(time.time())
            self.changed.set()

    async def after(self, uri: str, at: float, timeout_s: float = 30) -> float:
        """The first arrival for `uri` at or after `at`."""
        with anyio.fail_after(timeout_s):
            while True:
                later = [t for t in self.times.get(uri, ()) if t >= at]
                if later:
                    return min(later)
                self.changed = anyio.Event()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def _listening(run: Run) -> AsyncIterator[tuple[ClientSession, _Arrivals]]:
    arrivals = _Arrivals()
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(run.env.server_params("--toolsets", "all"), errlog=devnull) as (r, w),
            ClientSession(r, w, message_handler=arrivals.handle) as session,
        ):
            await session.initialize()
            with warnings.catch_warnings():  # resources/subscribe: the 2025-11-25 way, on purpose
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                yield session, arrivals


async def _done_at(run: Run, task_id: str) -> float:
    def wait() -> float:
        result = run.env.app.AsyncResult(task_id)
        deadline = time.monotonic() + 60
        while not result.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} did not finish")
            time.sleep(0.01)
        return _epoch(result.date_done)

    return await anyio.to_thread.run_sync(wait)


async def _send(session: ClientSession, seconds: float) -> str:
    sent = tool_ok(
        await session.call_tool("send_task", {"task_name": "demo.sleep", "args": [seconds]})
    )
    return str(sent["task_id"])


async def _one_at_a_time(run: Run, n: int) -> list[float]:
    latencies = []
    async with _listening(run) as (session, arrivals):
        for _ in range(n):
            task_id = await _send(session, 0.2)
            uri = f"celery://tasks/{task_id}"
            await session.subscribe_resource(uri)
            done = await _done_at(run, task_id)
            latencies.append((await arrivals.after(uri, done) - done) * 1000)
            await session.unsubscribe_resource(uri)
    return latencies


async def _hundred(run: Run, n: int) -> tuple[list[float], int]:
    """Latencies of tasks that finished after all were subscribed, and channels left after."""
    async with _listening(run) as (session, arrivals):
        ids = [await _send(session, 0.05) for _ in range(n)]
        uris = [f"celery://tasks/{i}" for i in ids]
        for uri in uris:
            await session.subscribe_resource(uri)
        subscribed = time.time()
        done = [await _done_at(run, i) for i in ids]
        latencies = [
            (await arrivals.after(u, d) - d) * 1000
            for u, d in zip(uris, done, strict=True)
            if d > subscribed
        ]
        for uri in uris:
            await session.unsubscribe_resource(uri)
        backend = run.env.app.backend
        channels = [backend.get_key_for_task(i) for i in ids]
        await anyio.sleep(0.2)  # the watch applies unsubscribes in its thread
        left = sum(c for _, c in backend.client.pubsub_numsub(*channels))
    return latencies, left


async def rows(run: Run) -> list[Row]:
    session = run.session
    sent = tool_ok(await session.call_tool("send_task", {"task_name": "demo.add", "args": [1, 2]}))
    task_id = sent["task_id"]
    tool_ok(await session.call_tool("get_result", {"task_id": task_id, "timeout_s": 30}))
    n = run.n(200, 10)
    status_ms = await time_async(lambda: session.call_tool("get_status", {"task_id": task_id}), n)
    read_ms = await time_async(lambda: session.read_resource(f"celery://tasks/{task_id}"), n)
    ref = PromptReference(type="ref/prompt", name="triage_failures")

    async def complete() -> Any:
        return await session.complete(ref, {"name": "task_name", "value": "demo."})

    await complete()  # the first request of a kind reads the names; the rest hit the cache
    complete_ms = await time_async(complete, n)
    one = await _one_at_a_time(run, run.n(20, 3))
    many, left = await _hundred(run, run.n(100, 10))
    return [
        Row("resources/read celery://tasks/{id} p50", p50(read_ms), p50(status_ms),
            note="raw column: the get_status tool over the same session"),
        Row("completion/complete task_name p50", p50(complete_ms), target="< 5", 
            ok=p50(complete_ms) < 5, note=f"p95 {percentile(complete_ms, 95):.2f} ms"),
        Row("subscription: notified after date_done p50", p50(one), target="< 10",
            ok=p50(one) < 10, note=f"max {max(one):.1f} ms over {len(one)} tasks"),
        Row(f"{run.n(100, 10)} concurrent subscriptions: latency p50",
            p50(many) if many else None, target="all notified, all freed", ok=left == 0,
            note=f"max {max(many or [0]):.1f} ms ({len(many)} finished after subscribing); "
            f"{left} channels left after unsubscribing"),
    ]  # fmt: skip


async def _alone() -> None:
    with bench_env(workers=2) as env:
        async with env.session("--toolsets", "all") as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            print(render(await rows(Run(env=env, session=session, quick=False, tools=tools))))


if __name__ == "__main__":
    anyio.run(_alone)
