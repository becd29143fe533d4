"""`python -m bench.inspect_latency [-n N]`: inspect latency, celery-mcp against Celery's default.

One private cluster (embedded Valkey + two `celery-mcp worker` processes). Measured in this
process, on the same app and broker, alternating the two so both see the same load:

- `inspect_workers` (the service call behind the tool: stats, then active, reserved, scheduled,
  registered and active_queues of the workers that answered) and `ping_workers`, and the
  `inspect_workers` tool over MCP stdio;
- `app.control.inspect().stats()` and `.ping()`, Celery's defaults (1 s timeout, no limit);
- then one worker is SIGKILLed and both are measured again: celery-mcp reports it
  `disconnected` without waiting, Celery's default waits its timeout and silently omits it.

Prints a Markdown table of p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable
from functools import partial

import anyio

from bench.harness import BenchEnv, bench_env, percentile, time_async, time_sync, tool_ok
from celery_mcp.config import Settings
from celery_mcp.models.workers import InspectWorkersInput, PingInput
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.workers import inspect_workers, ping_workers


def _row(name: str, samples: list[float], note: str = "") -> str:
    p50, p95 = percentile(samples, 50), percentile(samples, 95)
    return f"| {name} | {p50:.1f} | {p95:.1f} | {len(samples)} | {note} |"


async def _over_mcp(env: BenchEnv, n: int) -> list[float]:
    """The inspect_workers tool as an agent sees it: official client, stdio, warm server."""
    async with env.session() as session:
        call = partial(session.call_tool, "inspect_workers", {})
        tool_ok(await call())
        return await time_async(call, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="samples per measurement")
    n = parser.parse_args().n
    rows = ["| call | p50 ms | p95 ms | n | note |", "|---|---|---|---|---|"]
    with bench_env(workers=2) as env:
        cluster = Cluster(Settings(data_dir=env.data_dir), app=env.app)
        calls: dict[str, Callable[[], object]] = {
            "celery-mcp inspect_workers": lambda: inspect_workers(cluster, InspectWorkersInput()),
            "celery-mcp ping_workers": lambda: ping_workers(cluster, PingInput()),
            "Celery inspect().stats()": lambda: env.app.control.inspect().stats(),
            "Celery inspect().ping()": lambda: env.app.control.inspect().ping(),
        }
        for call in calls.values():  # warm connections and imports
            call()
        found = inspect_workers(cluster, InspectWorkersInput())
        assert found.counts.workers == 2 and not found.missing, found
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(n):
            for name, call in calls.items():
                samples[name] += time_sync(call, 1)
        rows += [_row(name, s, "2 workers alive") for name, s in samples.items()]
        rows.append(_row("MCP tool inspect_workers", anyio.run(_over_mcp, env, n), "stdio"))

        victim = env.workers[0]
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        after = inspect_workers(cluster, InspectWorkersInput())
        reasons = [f"{m.hostname}: {m.reason.value}" for m in after.missing]
        stats = env.app.control.inspect().stats() or {}
        killed = max(3, n // 4)
        rows.append(
            _row(
                "celery-mcp inspect_workers",
                time_sync(lambda: inspect_workers(cluster, InspectWorkersInput()), killed),
                f"1 of 2 SIGKILLed; missing: {', '.join(reasons)}",
            )
        )
        rows.append(
            _row(
                "Celery inspect().stats()",
                time_sync(lambda: env.app.control.inspect().stats(), killed),
                f"1 of 2 SIGKILLed; answered {sorted(stats)}, the dead one silently omitted",
            )
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
