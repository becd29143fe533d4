"""Worker inspection and a chord of many tasks: MCP tool calls against raw Celery."""

from __future__ import annotations

import time
from typing import Any

from celery import chord

from bench.harness import Row, Run, p50

INSPECT_TARGET_MS = 50.0


async def inspect_rows(run: Run) -> list[Row]:
    """inspect_workers (or health's worker ping) against `inspect()` with Celery's defaults."""
    app = run.env.app
    n = run.n(10, 2)
    live = len(run.env.workers)
    if "inspect_workers" in run.tools:
        tool, arguments, what = "inspect_workers", {}, "inspect_workers"
    else:
        tool, arguments, what = "health", {"include_workers": True}, "health (worker ping)"
    mcp: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        out = await run.call(tool, **arguments)
        mcp.append((time.perf_counter() - start) * 1e3)
    raw: list[float] = []
    for _ in range(run.n(3, 1)):
        start = time.perf_counter()
        replies = app.control.inspect().stats()  # what `celery inspect stats` does
        raw.append((time.perf_counter() - start) * 1e3)
    answered = len(replies or {})
    note = (
        f"{live} live workers; raw = app.control.inspect().stats() with Celery's default "
        f"1 s timeout (waits it out even when all {answered} answered)"
    )
    if tool == "health":
        note += (
            "; inspect_workers was not registered when this ran, so this is health's "
            f"worker ping (it reported {len(out.get('worker_names', []))} workers)"
        )
    return [
        Row(
            f"{what} p50",
            p50(mcp),
            p50(raw),
            target=f"<= {INSPECT_TARGET_MS:.0f} ms",
            ok=p50(mcp) <= INSPECT_TARGET_MS,
            note=note,
        )
    ]


def _header(count: int) -> list[dict[str, Any]]:
    return [{"task_name": "demo.add", "args": [i, i]} for i in range(count)]


async def chord_rows(run: Run) -> list[Row]:
    """A chord of N `demo.add` and a `demo.xsum` callback, from the call to the final sum.

    Rounds alternate raw and MCP (raw first, then MCP first) so warm-up and load hit both.
    """
    app = run.env.app
    count = run.n(1000, 10)
    expected = sum(2 * i for i in range(count))
    raw_publish: list[float] = []
    raw_total: list[float] = []
    mcp_publish: list[float] = []
    mcp_total: list[float] = []

    def raw_round() -> None:
        start = time.perf_counter()
        header = [app.signature("demo.add", args=(i, i)) for i in range(count)]
        result = chord(header)(app.signature("demo.xsum"))
        raw_publish.append((time.perf_counter() - start) * 1e3)
        # follow_parents=False: by default get() re-reads every header task's state each
        # interval (to raise a header failure early): 1,000 GETs per 10 ms, 1.5x slower
        assert result.get(timeout=300, interval=0.01, follow_parents=False) == expected
        raw_total.append((time.perf_counter() - start) * 1e3)

    async def mcp_round() -> None:
        start = time.perf_counter()
        sent = await run.call(
            "chord_workflow", header=_header(count), callback={"task_name": "demo.xsum"}
        )
        mcp_publish.append((time.perf_counter() - start) * 1e3)
        done = await run.call("get_result", task_id=sent["workflow_id"], timeout_s=300)
        mcp_total.append((time.perf_counter() - start) * 1e3)
        assert done["result"] == expected, done

    has_tool = "chord_workflow" in run.tools
    for i in range(run.n(3, 1)):
        if i % 2 == 0 or not has_tool:
            raw_round()
        if has_tool:
            await mcp_round()
        if i % 2 == 1 and has_tool:
            raw_round()
    mcp_p = p50(mcp_publish) if mcp_publish else None
    mcp_t = p50(mcp_total) if mcp_total else None
    return [
        Row(
            f"chord of {count}: publish",
            mcp_p,
            p50(raw_publish),
            note="MCP: one chord_workflow call (validates every step, then publishes); raw: "
            "chord(header)(callback); medians of alternating rounds"
            + ("" if has_tool else "; chord_workflow was not registered when this ran"),
        ),
        Row(
            f"chord of {count}: to final result",
            mcp_t,
            p50(raw_total),
            note=f"{len(run.env.workers)} prefork worker(s) x 2 processes run the header; "
            "both wait by pub/sub on the callback's result (raw: get(follow_parents=False); "
            "Celery's default get() also polls every header task's state each interval and "
            "measured 1.5x slower)",
        ),
    ]


async def rows(run: Run) -> list[Row]:
    return [*await inspect_rows(run), *await chord_rows(run)]
