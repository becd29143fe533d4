"""A chord of 1,000 (demo.add header, demo.xsum callback), end to end: MCP vs raw Celery.

Run: python -m bench.workflows [--size N] [--rounds R]

Starts its own embedded Valkey (temporary data dir), one real `celery-mcp worker` (prefork)
and `celery-mcp serve` over stdio driven by the official MCP client; the raw side is the Celery
app `make_app` builds, in this process, on the same broker. Rounds alternate MCP and raw so
machine load hits both alike. End to end = from the call that publishes to the callback's
result in hand: `chord_workflow` + `get_result` for MCP, `chord(...).apply_async()` +
`AsyncResult.get(interval=0.01)` for raw Celery. Prints medians and the ratio MCP / raw.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from celery import chord, group
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from bench.processes import wait_ready
from celery_mcp.app import make_app
from celery_mcp.config import Settings
from celery_mcp.runtime.embedded import ensure_running, resolve, stop


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 (lives with the child)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery_mcp", "worker", "--hostname", "bench-wf@%h", "-c", "4"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    wait_ready(proc, log, "worker")
    return proc


def raw_chord(app: Any, size: int) -> tuple[float, float]:
    """(publish seconds, end-to-end seconds) of one chord through Celery's own API."""
    start = time.perf_counter()
    header = group([app.signature("demo.add", args=(i, i)) for i in range(size)])
    result = chord(header, app.signature("demo.xsum"), app=app).apply_async()
    published = time.perf_counter() - start
    value = result.get(timeout=300, interval=0.01)
    assert value == sum(2 * i for i in range(size)), value
    return published, time.perf_counter() - start


async def mcp_chord(session: ClientSession, size: int) -> tuple[float, float]:
    """(publish seconds, end-to-end seconds) of one chord through chord_workflow + get_result."""
    header = [{"task_name": "demo.add", "args": [i, i]} for i in range(size)]
    start = time.perf_counter()
    sent = await session.call_tool(
        "chord_workflow", {"header": header, "callback": {"task_name": "demo.xsum"}}
    )
    published = time.perf_counter() - start
    assert not sent.is_error and sent.structured_content, sent.content
    workflow_id = sent.structured_content["workflow_id"]
    while True:
        got = await session.call_tool("get_result", {"task_id": workflow_id, "timeout_s": 60})
        data = got.structured_content or {}
        if data.get("ready"):
            break
    assert data["result"] == sum(2 * i for i in range(size)), data
    return published, time.perf_counter() - start


async def main(size: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")}
        env |= {"CELERY_MCP_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
        ensure_running(data)
        worker = start_worker(env, data / "worker.log")
        try:
            app = make_app(resolve(Settings(data_dir=data)))
            app.loader.import_default_modules()
            params = StdioServerParameters(
                command=sys.executable,
                args=["-m", "celery_mcp", "serve", "--toolsets", "tasks,workflows"],
                env=env,
            )
            with open(os.devnull, "w") as devnull:
                async with (
                    stdio_client(params, errlog=devnull) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    raw_chord(app, 50)  # warm both paths (connections, imports, pools)
                    await mcp_chord(session, 50)
                    raw: list[tuple[float, float]] = []
                    via_mcp: list[tuple[float, float]] = []
                    for _ in range(rounds):
                        raw.append(raw_chord(app, size))
                        via_mcp.append(await mcp_chord(session, size))
        finally:
            worker.terminate()
            worker.wait(30)
            stop(data)
    med = statistics.median
    raw_pub, raw_e2e = med(r[0] for r in raw), med(r[1] for r in raw)
    mcp_pub, mcp_e2e = med(r[0] for r in via_mcp), med(r[1] for r in via_mcp)
    print(f"chord of {size} (demo.add header, demo.xsum callback), {rounds} rounds, medians")
    print(f"{'':18} {'MCP':>9} {'raw Celery':>11} {'ratio':>7}")
    print(f"{'publish (s)':18} {mcp_pub:9.3f} {raw_pub:11.3f} {mcp_pub / raw_pub:6.2f}x")
    print(f"{'end to end (s)':18} {mcp_e2e:9.3f} {raw_e2e:11.3f} {mcp_e2e / raw_e2e:6.2f}x")
    print("all rounds, end to end (s): MCP", [round(r[1], 3) for r in via_mcp])
    print("                            raw", [round(r[1], 3) for r in raw])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    anyio.run(main, ns.size, ns.rounds)
