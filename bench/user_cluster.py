"""A user's own app (`serve --app bench.user_app:app`, a stock `celery worker`): celery_mcp's
share of a send_task call there, and the cold start with `--app`, beside the demo app's.

The share is the same measure as bench.tasks' (MCP minus raw send minus the SDK's no-op tool
floor), measured here side by side with its own floor, on the bench's broker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

from mcp import StdioServerParameters

from bench.harness import Row, Run, p50
from bench.processes import terminate, wait_ready
from bench.startup import COLD_STARTS, cold_start_ms
from bench.tasks import IDLE_QUEUE, PAIRS_NOTE, SEND_TARGET_MS, over_fresh_pairs
from bench.user_app import app as user_app

APP = "bench.user_app:app"
COLD_START_APP_TARGET_MS = 300.0


def user_env(run: Run) -> dict[str, str]:
    server = run.env.server
    return run.env.env | {
        "BENCH_USER_BROKER": server.url_for_db(0),
        "BENCH_USER_BACKEND": server.url_for_db(1),
    }


@contextlib.contextmanager
def stock_worker(run: Run) -> Iterator[None]:
    """`celery -A bench.user_app:app worker`: a user's worker, knowing nothing of celery-mcp."""
    log_path = run.env.data_dir / "worker-user.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "worker", "-c", "1", "-P", "solo"]
            + ["--hostname", "user@%h", "-l", "INFO"],
            env=user_env(run),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_ready(proc, log_path, "user worker")
        yield
    finally:
        terminate(proc)


def _params(run: Run, *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=list(args), env=user_env(run))


async def rows(run: Run) -> list[Row]:
    n = run.n(1000, 10)
    os.environ.update({k: v for k, v in user_env(run).items() if k.startswith("BENCH_USER")})
    user_app.conf.broker_url = os.environ["BENCH_USER_BROKER"]
    user_app.conf.result_backend = os.environ["BENCH_USER_BACKEND"]
    ours = _params(run, "-m", "celery_mcp", "serve", "--app", APP)
    bare = _params(run, "-m", "bench.floor_server")
    args = {"task_name": "user.noop", "queue": IDLE_QUEUE}
    with stock_worker(run):
        raw, sent, noop = await over_fresh_pairs(
            run,
            n,
            lambda mcp, floor: (
                lambda: user_app.send_task("user.noop", queue=IDLE_QUEUE),
                lambda: mcp.call_tool("send_task", args),
                floor.noop,
            ),
            warm=run.n(50, 2),
            server=ours,
            env=user_env(run),
        )
        run.env.purge(IDLE_QUEUE)
        tries = run.n(COLD_STARTS, 1)
        cold, cold_floor = [], []
        for _ in range(tries):  # alternated: load drift hits both
            cold.append(await cold_start_ms(ours))
            cold_floor.append(await cold_start_ms(bare))
    share = p50(sent) - p50(raw) - p50(noop)
    cold_over = p50(cold) - p50(cold_floor)
    return [
        Row(
            "send_task p50, a user's app (--app, stock worker)",
            p50(sent),
            p50(raw),
            note=f"raw = the user's app.send_task (Celery defaults: no task-sent event); {n} "
            f"each, alternated with the floor (bare no-op tool, {p50(noop):.2f} ms); "
            f"{PAIRS_NOTE}",
        ),
        Row(
            "send_task: celery_mcp's share, a user's app",
            share,
            target=f"<= {SEND_TARGET_MS:g} ms",
            ok=share <= SEND_TARGET_MS,
            note="MCP - raw - floor, as for the demo app; the user's app keeps no arguments "
            "(no result_extended), so each send also notes them in the history (one round "
            "trip) for retry_task",
        ),
        Row(
            "cold start with --app (a user's app)",
            p50(cold),
            p50(cold_floor),
            target=f"<= floor + {COLD_START_APP_TARGET_MS:g} ms",
            ok=cold_over <= COLD_START_APP_TARGET_MS,
            note=f"raw column = a bare MCPServer's cold start; median of {tries}, alternated; "
            "initialize and tools/list are answered before the user's app is imported",
        ),
    ]
