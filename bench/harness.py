"""What every benchmark shares: a private cluster, an MCP client, timers and the result table.

`BenchEnv` starts its own embedded Valkey in a temporary data dir and one real
`celery-mcp worker` on it, so the MCP server (`celery-mcp serve` over stdio, driven by the
official `mcp.ClientSession`) and the raw Celery client (the same app `make_app` builds, in this
process) talk to the same broker in the same run. Every process it starts is stopped on exit.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from bench.processes import READY_TIMEOUT_S, wait_ready
from celery_mcp.app import make_app
from celery_mcp.config import Settings
from celery_mcp.runtime.embedded import EmbeddedServer, ensure_running, resolve, stop


def percentile(samples: list[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `samples`, nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Row:
    """One line of the table: the same operation through MCP and through raw Celery."""

    name: str
    mcp: float | None
    raw: float | None = None
    unit: str = "ms"
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> str:
        if self.mcp is None or not self.raw:
            return ""
        return f"{self.mcp / self.raw:.2f}x"

    @property
    def delta(self) -> str:
        if self.mcp is None or self.raw is None:
            return ""
        return f"{self.mcp - self.raw:+.2f}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"


def render(rows: list[Row]) -> str:
    """The result table (Markdown, readable as plain text), then the notes of each row."""
    header = ["benchmark", "unit", "MCP", "raw Celery", "ratio", "MCP-raw", "target", "met"]
    lines = [
        [
            r.name,
            r.unit,
            _fmt(r.mcp),
            _fmt(r.raw),
            r.ratio,
            r.delta,
            r.target,
            {True: "yes", False: "NO", None: ""}[r.ok],
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(out + ([""] + notes if notes else []))


def tool_ok(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful tool result (raises on isError)."""
    if result.is_error or result.structured_content is None:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise RuntimeError(f"tool call failed: {text}")
    return dict(result.structured_content)


@dataclass
class Worker:
    """A real `celery-mcp worker` process (its own process group)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    hostname: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@dataclass
class BenchEnv:
    """A private embedded Valkey, one demo worker, the raw Celery app and the server's env."""

    data_dir: Path
    server: EmbeddedServer
    env: dict[str, str]
    app: Celery
    workers: list[Worker] = field(default_factory=list)

    def start_workers(self, count: int, concurrency: int = 2) -> list[Worker]:
        """Start `count` demo workers (`bench<i>@%h`, prefork) and wait until all are ready."""
        started = []
        for _ in range(count):
            hostname = f"bench{len(self.workers)}@%h"
            log_path = self.data_dir / f"worker-{hostname.split('@')[0]}.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "celery_mcp", "worker", "--hostname", hostname]
                    + ["-c", str(concurrency), "-P", "prefork", "-l", "INFO"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.workers.append(Worker(proc, log_path, hostname))
            started.append(self.workers[-1])
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in started:
            wait_ready(worker.proc, worker.log_path, f"worker {worker.hostname}", deadline)
        return started

    def plain_app(self) -> Celery:
        """A Celery app with Celery's defaults on the same broker and backend (a reference)."""
        app = Celery("plain", broker=self.server.url_for_db(0), backend=self.server.url_for_db(1))
        app.conf.broker_connection_retry_on_startup = True
        return app

    def purge(self, queue: str) -> None:
        """Drop every message waiting in `queue`."""
        with self.app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)

    def server_params(self, *extra: str) -> StdioServerParameters:
        return StdioServerParameters(
            command=sys.executable, args=["-m", "celery_mcp", "serve", *extra], env=self.env
        )

    def session(self, *extra: str) -> contextlib.AbstractAsyncContextManager[ClientSession]:
        """An initialized official-client session with a fresh `celery-mcp serve` process."""
        return stdio_session(self.server_params(*extra))


@contextlib.asynccontextmanager
async def stdio_session(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    """An initialized official-client session with the server `params` start (stderr dropped)."""
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@contextlib.contextmanager
def bench_env(workers: int = 1, concurrency: int = 2) -> Iterator[BenchEnv]:
    """Start a private cluster (embedded Valkey + `workers` demo workers); stop it after."""
    with tempfile.TemporaryDirectory(prefix="celery-mcp-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        server = ensure_running(data_dir)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")}
        env = clean | {"CELERY_MCP_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        app = make_app(resolve(Settings(data_dir=data_dir)))
        bench = BenchEnv(data_dir=data_dir, server=server, env=env, app=app)
        try:
            bench.start_workers(workers, concurrency)
            yield bench
        finally:
            for worker in bench.workers:
                worker.stop()
            with contextlib.suppress(Exception):
                app.close()
            stop(data_dir)


def time_sync(func: Callable[[], object], n: int) -> list[float]:
    """Milliseconds of `n` sequential calls of `func`."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


async def time_async(func: Callable[[], Any], n: int) -> list[float]:
    """Milliseconds of `n` sequential awaits of `func()`."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await func()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


@dataclass
class Run:
    """What a benchmark module's `rows(run)` gets: the cluster, one warm MCP session, the scale."""

    env: BenchEnv
    session: ClientSession
    quick: bool
    tools: set[str]

    def n(self, full: int, quick: int) -> int:
        """An iteration count: `full` normally, `quick` for the CI smoke."""
        return quick if self.quick else full

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured content."""
        return tool_ok(await self.session.call_tool(tool, arguments))


async def interleaved(
    raw: Callable[[], object], mcp: Callable[[], Any], n: int, rounds: int = 10
) -> tuple[list[float], list[float]]:
    """(raw ms, MCP ms) of `n` sync `raw` and async `mcp` calls, taking turns in `rounds`."""
    raw_ms, mcp_ms = await alternated(n, raw, mcp, rounds=rounds)
    return raw_ms, mcp_ms


async def alternated(n: int, *sides: Callable[[], Any], rounds: int = 10) -> list[list[float]]:
    """Milliseconds of `n` calls of each side (a sync function, or one returning an awaitable),
    taking turns in `rounds` blocks: load drift hits every side alike, so differences between
    their medians hold (the floor a target subtracts is measured in the same blocks)."""
    samples: list[list[float]] = [[] for _ in sides]
    rounds = max(1, min(rounds, n))
    for i in range(rounds):
        block = n // rounds + (1 if i < n % rounds else 0)
        for side, out in zip(sides, samples, strict=True):
            out += await _timed(side, block)
    return samples


async def _timed(func: Callable[[], Any], n: int) -> list[float]:
    """Milliseconds of `n` sequential calls of `func`, awaiting what it returns if awaitable."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        result = func()
        if inspect.isawaitable(result):
            await result
        samples.append((time.perf_counter() - start) * 1e3)
    return samples
