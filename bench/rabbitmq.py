"""`python -m bench.rabbitmq [-n N]`: RabbitMQ + rpc://, celery-mcp against raw Celery.

A private RabbitMQ node (`tests.rabbit`: needs Debian's rabbitmq-server) and two stock
`celery worker` processes of the user app `tests/apps/user_app.py` on amqp + rpc://. Measured
in this process, alternating, on the same broker:

- `inspect_workers` / `ping_workers` (service calls; the mailbox census) against Celery's
  `inspect().stats()` / `.ping()` defaults (1 s timeout, no limit: they wait it out on AMQP);
- a send + result round trip: celery-mcp's `send_task` + `get_result` (result kept by the
  reply drain in the state store) against `app.send_task(...).get()` (Celery's own rpc://
  consumer, in the sending thread);
- the `inspect_workers` tool over MCP stdio.

Prints a Markdown table of p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import anyio
from celery import Celery

from bench.harness import percentile, time_async, time_sync, tool_ok
from celery_mcp.config import Settings
from celery_mcp.models.tasks import GetResultInput, SendTaskInput
from celery_mcp.models.workers import InspectWorkersInput, PingInput
from celery_mcp.runtime.connect import open_cluster
from celery_mcp.runtime.embedded import stop as stop_embedded
from celery_mcp.service.tasks import get_result, send_task
from celery_mcp.service.workers import inspect_workers, ping_workers
from tests.rabbit import install_if_missing, private_rabbit  # the tests' private node
from tests.support import Worker, mcp_session

APP = "tests.apps.user_app:app"


def _row(name: str, samples: list[float], note: str = "") -> str:
    p50, p95 = percentile(samples, 50), percentile(samples, 95)
    return f"| {name} | {p50:.1f} | {p95:.1f} | {len(samples)} | {note} |"


async def _over_mcp(env: dict[str, str], n: int) -> list[float]:
    async with mcp_session(env) as session:
        call = partial(session.call_tool, "inspect_workers", {})
        tool_ok(await call())
        return await time_async(call, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="samples per measurement")
    n = parser.parse_args().n
    why_not = install_if_missing()
    if why_not:
        sys.exit(f"bench.rabbitmq: {why_not}")
    rows = ["| call (amqp + rpc://) | p50 ms | p95 ms | n | note |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="bench-rabbit-") as tmp:
        base = Path(tmp)
        data = base / "data"
        data.mkdir()
        with private_rabbit(base / "rabbit") as node:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")} | {
                "CELERY_MCP_DATA_DIR": str(data),
                "CELERY_MCP_APP": APP,
                "USER_BROKER_URL": node.url,
                "USER_RESULT_BACKEND": "rpc://",
            }
            os.environ.update(USER_BROKER_URL=node.url, USER_RESULT_BACKEND="rpc://")
            workers = [
                Worker(env, f"b{i}@%h", app=APP, log_dir=data).wait_ready(60) for i in (1, 2)
            ]
            try:
                cluster = open_cluster(Settings(app=APP, data_dir=data))
                # Celery as it comes (its own rpc:// backend), on the same broker
                raw = Celery("raw", broker=node.url, backend="rpc://", set_as_current=False)
                calls = {
                    "celery-mcp inspect_workers": lambda: inspect_workers(
                        cluster, InspectWorkersInput()
                    ),
                    "Celery inspect().stats()": lambda: raw.control.inspect().stats(),
                    "celery-mcp ping_workers": lambda: ping_workers(cluster, PingInput()),
                    "Celery inspect().ping()": lambda: raw.control.inspect().ping(),
                    "celery-mcp send_task + get_result": lambda: get_result(
                        cluster,
                        GetResultInput(
                            task_id=send_task(
                                cluster, SendTaskInput(task_name="user.add", args=[1, 2])
                            ).task_id,
                            timeout_s=10,
                        ),
                    ),
                    "Celery send_task().get()": lambda: raw.send_task("user.add", args=[1, 2]).get(
                        timeout=10
                    ),
                }
                for call in calls.values():  # connections, imports, the first roll call
                    call()
                samples: dict[str, list[float]] = {name: [] for name in calls}
                for _ in range(n):
                    for name, call in calls.items():
                        samples[name] += time_sync(call, 1)
                rows += [_row(name, s, "2 stock workers") for name, s in samples.items()]
                rows.append(_row("MCP tool inspect_workers", anyio.run(_over_mcp, env, n), "stdio"))
                cluster.close()
            finally:
                for worker in workers:
                    worker.stop()
                stop_embedded(data)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
