"""Benchmark: list_tasks over 100k recorded tasks, and the memory the history uses.

`python -m bench.history` starts a private embedded Valkey (temporary data dir), feeds the
recorder's write path (`HistoryStore.record`, what `celery-mcp monitor` calls) with the events
of N tasks (sent, received, started, then succeeded or failed; 8 % fail with a traceback), then
times `list_tasks` as the MCP tool calls it (the service function, in this process, and once through
`celery-mcp serve` over stdio) and reads
the memory from Redis (INFO used_memory before/after, MEMORY USAGE per key kind).

Not a test: it prints numbers and asserts nothing. `BENCH_HISTORY_TASKS` sets N (100000).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery_mcp.config import Settings
from celery_mcp.models.history import ListTasksInput
from celery_mcp.runtime.embedded import ensure_running, resolve, stop
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.history import history_store, list_tasks
from celery_mcp.stores.history import HistoryStore

N_TASKS = int(os.environ.get("BENCH_HISTORY_TASKS", "100000"))
RUNS = 50
NAMES = [f"app.tasks.job_{i:02d}" for i in range(20)]
WORKERS = [f"w{i}@host{i}" for i in range(4)]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "/srv/app/tasks.py", line 42, in job\n    do_work(x)\n' * 20
    + "ValueError: bad input 17\n"
)


def events(n: int, now: float) -> list[dict[str, Any]]:
    """The events of task number `n` (a realistic mix)."""
    rng = random.Random(n)
    tid = f"{n:08d}-bench-{rng.getrandbits(64):016x}"
    ts = now - (N_TASKS - n) * 0.5
    name, worker = NAMES[n % len(NAMES)], WORKERS[n % len(WORKERS)]
    common = {"uuid": tid, "hostname": worker}
    out = [
        {
            **common,
            "type": "task-sent",
            "timestamp": ts,
            "name": name,
            "args": f"({n}, 'abc')",
            "kwargs": "{'retry': False}",
            "queue": "celery" if n % 3 else "bulk",
            "hostname": "client",
        },
        {**common, "type": "task-received", "timestamp": ts + 0.002, "name": name},
        {**common, "type": "task-started", "timestamp": ts + 0.003},
    ]
    if rng.random() < 0.08:
        out.append(
            {
                **common,
                "type": "task-failed",
                "timestamp": ts + 0.05,
                "exception": "ValueError('bad input 17')",
                "traceback": TRACEBACK,
            }
        )
    else:
        out.append(
            {
                **common,
                "type": "task-succeeded",
                "timestamp": ts + 0.05,
                "result": "{'rows': 120}",
                "runtime": 0.047,
            }
        )
    return out


def timed(fn: Callable[[], Any], runs: int = RUNS) -> tuple[float, float]:
    """(p50, p95) in milliseconds of `fn()` over `runs` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def memory_by_kind(store: HistoryStore) -> dict[str, tuple[int, int]]:
    """(keys, bytes) per key kind (t:, r:, s:, n:, other), MEMORY USAGE summed over all keys."""
    sizes: dict[str, list[int]] = {}
    keys = list(store.r.scan_iter(match=f"{store.prefix}*", count=10_000))
    pipe = store.r.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    for key, size in zip(keys, pipe.execute(), strict=True):
        kind = key[len(store.prefix) :].split(":", 1)[0]
        kind = kind if kind in ("t", "r", "s", "n", "idx") else "other"
        sizes.setdefault(kind, []).append(int(size or 0))
    return {k: (len(v), sum(v)) for k, v in sorted(sizes.items())}


def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    ensure_running(data_dir)
    try:
        settings = Settings(
            data_dir=data_dir, history_max_tasks=N_TASKS, history_max_age_s=30 * 86_400
        )
        cluster = Cluster(resolve(settings))
        store = history_store(cluster)
        used_before = int(store.r.info("memory")["used_memory"])
        now = time.time()
        start = time.perf_counter()
        batch: list[dict[str, Any]] = []
        total_events = 0
        for n in range(N_TASKS):
            batch.extend(events(n, now))
            if len(batch) >= 2_000:
                store.record(batch)
                total_events += len(batch)
                batch = []
        store.record(batch)
        total_events += len(batch)
        fill_s = time.perf_counter() - start
        used_after = int(store.r.info("memory")["used_memory"])
        kept = int(store.r.zcard(store.key("idx")))
        print(f"history: {kept:,} tasks kept from {total_events:,} events")
        print(
            f"recorder write path: {total_events / fill_s:,.0f} events/s "
            f"({fill_s:.1f} s; batches of 2,000 events, one MGET + one pipeline each)"
        )
        delta = used_after - used_before
        print(
            f"memory: INFO used_memory +{delta / 2**20:.1f} MiB "
            f"= {delta / kept:,.0f} bytes per task"
        )
        for kind, (count, size) in memory_by_kind(store).items():
            print(f"  {kind:6} {count:>8,} keys {size / 2**20:8.1f} MiB (MEMORY USAGE)")
        queries: dict[str, dict[str, Any]] = {
            "newest 20, no filter": {},
            "newest 20, status=FAILURE": {"status": ["FAILURE"]},
            "newest 20, task_name glob + FAILURE": {
                "task_name": "app.tasks.job_1*",
                "status": ["FAILURE"],
            },
            "newest 20, worker filter (post-filter)": {"worker": "w3@*"},
            "newest 200, last hour": {"within_s": 3600, "limit": 200},
            "page 50 via cursor": {"limit": 20},
        }
        print(f"list_tasks over {kept:,} tasks (service call, p50 / p95 of {RUNS} runs):")
        for label, fields in queries.items():
            request = ListTasksInput(**fields)
            if label.startswith("page 50"):
                cursor = None
                for _ in range(49):
                    cursor = list_tasks(
                        cluster, ListTasksInput(limit=20, cursor=cursor)
                    ).next_cursor
                request = ListTasksInput(limit=20, cursor=cursor)
            p50, p95 = timed(lambda r=request: list_tasks(cluster, r))  # type: ignore[misc]
            print(f"  {label:42} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms")
        p50, p95 = asyncio.run(over_mcp(data_dir))
        label = "newest 20 over MCP stdio (official client)"
        print(f"  {label:42} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms")
    finally:
        stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


async def over_mcp(data_dir: Path) -> tuple[float, float]:
    """(p50, p95) ms of list_tasks called through `celery-mcp serve` over stdio."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")}
    env |= {"CELERY_MCP_DATA_DIR": str(data_dir), "CELERY_MCP_HISTORY_MAX_TASKS": str(N_TASKS)}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "celery_mcp", "serve"], env=env
    )
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            samples = []
            for i in range(RUNS + 1):
                start = time.perf_counter()
                result = await session.call_tool("list_tasks", {"limit": 20})
                assert not result.is_error, result
                if i:  # the first call builds the cluster
                    samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


if __name__ == "__main__":
    main()
