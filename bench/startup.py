"""Cold start of `celery-mcp serve` to the first `tools/list` answer, and its resident memory."""

from __future__ import annotations

import os
import statistics
import sys
import time

import psutil
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from bench.harness import Row, Run

COLD_START_OVER_FLOOR_MS = 200.0
#: Cold starts per side (alternated): a spawn varies by tens of ms, a median of 7 by ~20 ms.
COLD_STARTS = 15


async def cold_start_ms(params: StdioServerParameters) -> float:
    """Milliseconds from spawning a server to its first `tools/list` answer."""
    start = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await session.list_tools()
            return (time.perf_counter() - start) * 1e3


def server_rss_mb() -> float | None:
    """Resident memory (MiB) of this process's `celery_mcp serve` child, if there is one."""
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = child.cmdline()
            if "celery_mcp" in cmdline and "serve" in cmdline:
                return float(child.memory_info().rss) / 2**20
        except psutil.Error:
            continue
    return None


async def rows(run: Run) -> list[Row]:
    tries = run.n(COLD_STARTS, 1)
    bare = StdioServerParameters(command=sys.executable, args=["-m", "bench.floor_server"])
    ours, floor = [], []
    for _ in range(tries):  # alternated: load drift hits both
        ours.append(await cold_start_ms(run.env.server_params()))
        floor.append(await cold_start_ms(bare))
    rss = server_rss_mb()
    over = statistics.median(ours) - statistics.median(floor)
    return [
        Row(
            "cold start: spawn to first tools/list",
            statistics.median(ours),
            statistics.median(floor),
            target=f"<= floor + {COLD_START_OVER_FLOOR_MS:g} ms",
            ok=over <= COLD_START_OVER_FLOOR_MS,
            note=f"raw column = a bare MCPServer's cold start (the floor); median of {tries}, "
            "alternated; embedded Valkey already running (as for any client after the first)",
        ),
        Row(
            "server resident memory after the run",
            rss,
            unit="MiB",
            note="RSS of the warm `celery-mcp serve` used by every row above",
        ),
    ]
