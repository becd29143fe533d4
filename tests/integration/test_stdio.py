"""MCP over stdio on the event loop's own pipes (`interfaces/mcp/stdio.py`), spoken to as a
client does: JSON-RPC lines on the real server's stdin, replies read from its stdout."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery_mcp.interfaces.mcp.stdio import MAX_LINE_BYTES

#: `celery-mcp serve`, counting the worker-thread hops anyio makes (the SDK's own stdio
#: transport makes one per line read, written and flushed), printed to stderr at exit.
COUNTING_SERVE = """
import atexit, sys, anyio.to_thread, runpy
hops = 0
run_sync = anyio.to_thread.run_sync
async def counted(*args, **kwargs):
    global hops
    hops += 1
    return await run_sync(*args, **kwargs)
anyio.to_thread.run_sync = counted
atexit.register(lambda: print(f"thread hops: {hops}", file=sys.stderr))
sys.argv = ["celery-mcp", "serve"]
runpy.run_module("celery_mcp", run_name="__main__")
"""
PINGS = 20


def _message(id_: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}


def _session_lines() -> bytes:
    """initialize, initialized, then PINGS pings (ids 2..PINGS+1)."""
    init = _message(
        1,
        "initialize",
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    )
    lines = [init, {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    lines += [_message(i, "ping") for i in range(2, PINGS + 2)]
    return b"".join(json.dumps(m).encode() + b"\n" for m in lines)


def _answered_ids(stdout: bytes) -> list[int]:
    """The ids of the complete reply lines in `stdout` (a last line may still be coming)."""
    return [json.loads(line)["id"] for line in stdout.split(b"\n")[:-1] if line.strip()]


def _exchange(
    env: Mapping[str, str], lines: bytes, stdout: Path | None = None
) -> tuple[list[int], str]:
    """Write `lines` to a real server's stdin and keep it open until every request among them
    is answered (at most 30 s; a client closing stdin ends the session at once), then close it.
    The answered ids in order, and what the server wrote to stderr."""
    expected = PINGS + 1
    out_file = open(stdout, "w+b") if stdout is not None else None  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", COUNTING_SERVE],
        stdin=subprocess.PIPE,
        stdout=out_file or subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    assert proc.stdin is not None and proc.stderr is not None
    got = b""
    try:
        proc.stdin.write(lines)
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while len(_answered_ids(got)) < expected and time.monotonic() < deadline:
            if stdout is not None:
                time.sleep(0.05)
                got = stdout.read_bytes()
            else:
                assert proc.stdout is not None
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    got += os.read(proc.stdout.fileno(), 65536)
    finally:
        proc.stdin.close()
        proc.wait(15)
        if out_file is not None:
            out_file.close()
    return _answered_ids(got), proc.stderr.read().decode(errors="replace")


def test_messages_on_pipes_take_no_thread_hop(env: dict[str, str]) -> None:
    ids, stderr = _exchange(env, _session_lines())
    assert ids == list(range(1, PINGS + 2)), stderr
    assert "thread hops: 0" in stderr, stderr


def test_a_file_as_stdout_is_served_by_the_sdks_threaded_transport(
    env: dict[str, str], tmp_path: Path
) -> None:
    # a regular file: epoll cannot watch it
    ids, stderr = _exchange(env, _session_lines(), stdout=tmp_path / "replies.jsonl")
    assert ids == list(range(1, PINGS + 2)), stderr
    assert "thread hops: 0" not in stderr, stderr


def test_an_overlong_line_is_dropped_and_the_next_request_answered(env: dict[str, str]) -> None:
    lines = _session_lines().split(b"\n")
    overlong = b'{"jsonrpc": "2.0", "id": 99, "method": "ping", "params": {"x": "'
    overlong += b"x" * (MAX_LINE_BYTES + 10) + b'"}}'
    ids, stderr = _exchange(env, b"\n".join([lines[0], lines[1], overlong, *lines[2:]]))
    assert ids == list(range(1, PINGS + 2)), stderr[-2000:]
