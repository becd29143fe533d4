"""Flower's REST API beside celery_mcp, the two ways an agent could reach a cluster over one
call each: the queue lengths, and sending a task and waiting for its result.

Starts `celery flower` (Flower 2.x, `pip install flower`) on the bench's broker with the demo
tasks, its API open on loopback (FLOWER_UNAUTHENTICATED_API), and calls it with one kept-alive
HTTP client; the MCP side is the bench's warm stdio session. Skipped when Flower is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx2

from bench.harness import Row, Run, p50, time_async
from bench.processes import terminate
from bench.tasks import PAIRS_NOTE, over_fresh_pairs

QUEUE = "celery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def flower(run: Run) -> Iterator[str]:
    """A running Flower on the bench's broker; yields its base URL."""
    port = _free_port()
    env = run.env.env | {"FLOWER_UNAUTHENTICATED_API": "true"}
    log = open(run.env.data_dir / "flower.log", "ab")  # noqa: SIM115 (lives with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.flower_app:app", "flower"]
        + ["--address=127.0.0.1", f"--port={port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{url}/healthcheck", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flower did not start: see {run.env.data_dir / 'flower.log'}")
            time.sleep(0.2)
        yield url
    finally:
        terminate(proc, timeout_s=10)
        log.close()


async def rows(run: Run) -> list[Row]:
    if importlib.util.find_spec("flower") is None:
        return [Row("Flower REST rows", None, note="skipped: flower is not installed")]
    n = run.n(200, 5)
    with flower(run) as url, httpx2.Client(base_url=url, timeout=10) as http:

        def flower_lengths() -> None:
            http.get("/api/queues/length").raise_for_status()

        def flower_floor() -> None:
            http.get("/healthcheck").raise_for_status()

        def flower_apply() -> None:
            reply = http.post("/api/task/apply/demo.noop", json={"args": []})
            reply.raise_for_status()
            assert reply.json().get("state") == "SUCCESS", reply.text

        raw_len, mcp_len, raw_apply, mcp_apply, http_floor, mcp_floor = await over_fresh_pairs(
            run,
            n,
            lambda session, floor: (
                flower_lengths,
                lambda: session.call_tool("queue_lengths", {}),
                flower_apply,
                lambda: session.call_tool("send_task", {"task_name": "demo.noop", "wait_s": 10}),
                flower_floor,
                floor.noop,
            ),
            warm=run.n(20, 2),
        )
        mcp_only = await time_async(
            lambda: run.session.call_tool("queue_lengths", {"consumers": False}), n
        )
    return [
        Row(
            "queue_lengths vs Flower REST /api/queues/length",
            p50(mcp_len),
            p50(raw_len),
            target="<= Flower",
            ok=p50(mcp_len) <= p50(raw_len),
            note=f"raw column = Flower 2.x REST (one kept-alive HTTP client), {n} calls each, "
            f"alternated, {PAIRS_NOTE}; MCP lists each queue's depth and its consumers (the "
            "workers' queue lists of the last 5 s); consumers=false (broker only): "
            f"{p50(mcp_only):.2f} ms",
        ),
        Row(
            "send + wait, one call: send_task(wait_s) vs Flower /api/task/apply",
            p50(mcp_apply),
            p50(raw_apply),
            target="<= Flower",
            ok=p50(mcp_apply) <= p50(raw_apply),
            note=f"raw column = Flower's apply (sends, waits for the result, one HTTP call); "
            f"{n} no-op tasks each, alternated; {PAIRS_NOTE}",
        ),
        Row(
            "floors: bare MCPServer no-op tool vs Flower GET /healthcheck",
            p50(mcp_floor),
            p50(http_floor),
            note="what each protocol costs with nothing behind it, in the same blocks as the "
            "rows above: the official MCP client over stdio to the SDK's server, against a "
            "synchronous httpx client to Flower's tornado server",
        ),
    ]
