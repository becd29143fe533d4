"""Benchmark: list_task_types over a catalog of 500 tasks (`python -m bench.catalog`).

Starts a private embedded Valkey (temporary data dir) and one `celery-mcp worker` running this
module's app of N typed tasks, then times, in this process:

- deriving the specs of all N tasks (what a worker does once at start);
- list_task_types with the app imported (specs derived per page, then cached);
- list_task_types with only the worker knowing the tasks (the `mcp_task_specs` broadcast and
  its reply, uncached, then within the cache TTL);
- list_task_types over MCP stdio (`celery-mcp serve --app bench.catalog:app`, official client).

Not a test: it prints a table and asserts nothing. `BENCH_CATALOG_TASKS` sets N (default 500).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from pydantic import BaseModel

from bench.processes import terminate, wait_ready

N_TASKS = int(os.environ.get("BENCH_CATALOG_TASKS", "500"))
APP_PATH = "bench.catalog:app"
ROOT = Path(__file__).resolve().parent.parent


class Item(BaseModel):
    """An order line."""

    sku: str
    qty: int = 1


def _make_app(n: int) -> Celery:
    """An app with `n` tasks `bench.tNNN(a: int, b: str = 'x', c: list[int] | None, item)`."""
    bench = Celery(
        "bench_catalog",
        broker=os.environ.get("CELERY_MCP_BROKER_URL"),
        backend=os.environ.get("CELERY_MCP_RESULT_BACKEND"),
        set_as_current=False,
    )
    bench.conf.update(task_default_queue="bench-catalog", broker_connection_retry_on_startup=True)
    for i in range(n):

        def task(a: int, b: str = "x", c: list[int] | None = None, item: Item | None = None) -> int:
            return a

        task.__name__ = task.__qualname__ = f"t{i:03d}"
        task.__doc__ = f"Task number {i} of the catalog benchmark.\n\n    Returns a."
        bench.task(name=f"bench.t{i:03d}", shared=False)(task)
    return bench


app = _make_app(N_TASKS)


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(median ms, max ms, last value) of `repeat` calls."""
    samples, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples), max(samples), value


@contextmanager
def _cluster() -> Iterator[tuple[dict[str, str], Path]]:
    """Env for children (broker on a private embedded Valkey) and the data dir; cleans up."""
    from celery_mcp.runtime.embedded import ensure_running, stop

    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        data = Path(tmp)
        server = ensure_running(data)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")}
        env |= {
            "CELERY_MCP_DATA_DIR": str(data),
            "CELERY_MCP_BROKER_URL": server.url_for_db(0),
            "CELERY_MCP_RESULT_BACKEND": server.url_for_db(1),
        }
        try:
            yield env, data
        finally:
            stop(data)


@contextmanager
def _worker(env: dict[str, str], data: Path) -> Iterator[None]:
    log = data / "worker.log"
    cmd = [sys.executable, "-m", "celery_mcp", "worker", "--hostname", "bench@%h"]
    cmd += ["-Q", "bench-catalog", "-P", "threads", "-c", "1"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, env=env | {"CELERY_MCP_APP": APP_PATH}, cwd=ROOT, stdout=out, stderr=out
        )
    try:
        wait_ready(proc, log, "worker")
        yield
    finally:
        terminate(proc)


async def _mcp_times(env: dict[str, str], repeat: int) -> dict[int, tuple[float, float, int]]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "celery_mcp", "serve"],
        env=env | {"CELERY_MCP_APP": APP_PATH},
        cwd=str(ROOT),
    )
    out: dict[int, tuple[float, float, int]] = {}
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            for limit in (100, 500):
                args = {"pattern": "bench.*", "limit": limit}
                await session.call_tool("list_task_types", args)  # warm-up
                samples, size = [], 0
                for _ in range(repeat):
                    start = time.perf_counter()
                    result = await session.call_tool("list_task_types", args)
                    samples.append((time.perf_counter() - start) * 1e3)
                    assert not result.is_error, result.content
                    size = len(json.dumps(result.structured_content))
                out[limit] = (statistics.median(samples), max(samples), size)
    return out


def main() -> None:
    from celery_mcp.config import Settings
    from celery_mcp.models.catalog import ListTaskTypesInput
    from celery_mcp.runtime.worker.commands import task_specs
    from celery_mcp.service.catalog import list_task_types
    from celery_mcp.service.cluster import Cluster

    rows: list[tuple[str, float, float, str]] = []
    start = time.perf_counter()
    specs = task_specs(app)
    derive_ms = (time.perf_counter() - start) * 1e3
    rows.append((f"derive {len(specs)} specs (worker start)", derive_ms, derive_ms, ""))
    with _cluster() as (env, data), _worker(env, data):
        os.environ.update(env)
        settings = Settings(data_dir=data, broker_url=env["CELERY_MCP_BROKER_URL"])
        with_app = Cluster(settings.model_copy(update={"app": APP_PATH}))
        worker_only = Cluster(settings)
        for limit in (100, 500):
            request = ListTaskTypesInput(pattern="bench.*", limit=limit)
            fresh = Cluster(settings.model_copy(update={"app": APP_PATH}))
            cold, _, page = _time(lambda r=request, c=fresh: list_task_types(c, r), 1)
            rows.append((f"app, limit {limit}, first call", cold, cold, f"total {page.total}"))
            list_task_types(with_app, request)
            med, worst, page = _time(lambda r=request: list_task_types(with_app, r), 20)
            rows.append((f"app, limit {limit}, cached", med, worst, f"{len(page.tasks)} tasks"))

            def uncached(r: ListTaskTypesInput = request) -> Any:
                worker_only.worker_view = None
                return list_task_types(worker_only, r)

            med, worst, page = _time(uncached, 10)
            note = f"{page.workers_answered} worker, {page.total} tasks"
            rows.append((f"worker only, limit {limit}, broadcast", med, worst, note))
            med, worst, page = _time(lambda r=request: list_task_types(worker_only, r), 20)
            rows.append((f"worker only, limit {limit}, within TTL", med, worst, ""))
        for limit, (med, worst, size) in asyncio.run(_mcp_times(env, 10)).items():
            rows.append((f"MCP stdio, app, limit {limit}", med, worst, f"{size} bytes"))
    print(f"list_task_types over a catalog of {N_TASKS} tasks (ms: median, max)")
    for name, med, worst, note in rows:
        print(f"  {name:42} {med:9.2f} {worst:9.2f}  {note}")


if __name__ == "__main__":
    main()
