"""The first minutes of a new user and an agent: what the program says must be true.

Real `celery-mcp serve` processes (stdio and HTTP, official client), a real embedded Valkey,
real workers (`celery-mcp worker` and stock ones with a duplicate name).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.types import CallToolResult

from celery_mcp.runtime.embedded import EmbeddedServer
from tests.support import (
    HttpServer,
    Worker,
    call,
    error_text,
    free_port,
    mcp_session,
    run_cli,
    started_workers,
)

pytestmark = pytest.mark.anyio

ERROR_TEXT = re.compile(r"^(?P<code>[a-z_]+): \S")


# -- start-up and shutdown ----------------------------------------------------------------------


def test_http_ready_line_comes_once_the_port_serves(
    env: dict[str, str], embedded: EmbeddedServer, tmp_path: Path
) -> None:
    server = HttpServer({**env, "CELERY_MCP_HTTP_AUTH": "false"}, tmp_path)
    try:
        server.wait_ready()  # the line, then the port answers at once
        assert server.output().count("MCP over HTTP at") == 1
    finally:
        server.stop()


def test_a_taken_port_stops_serve_with_one_line_before_any_worker_starts(
    env: dict[str, str], embedded: EmbeddedServer, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "celery_mcp", "serve", "--transport", "http"]
            + ["--port", str(port), "--with-worker"],
            env={**env, "CELERY_MCP_HTTP_AUTH": "false", "CELERY_MCP_DATA_DIR": str(data)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed = time.monotonic() - start
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert str(port) in lines[0] and "--port" in lines[0], lines
    assert not (data / "worker.log").exists(), "a worker was started"
    assert elapsed < 5, elapsed


async def test_first_health_waits_for_its_own_worker_and_names_are_unique(
    env: dict[str, str], embedded: EmbeddedServer, tmp_path: Path
) -> None:
    errlog = tmp_path / "serve.err"
    async with (
        mcp_session(env, "--with-worker", errlog=errlog) as first,
        mcp_session(env, "--with-worker") as second,
    ):
        health = await call(first, "health")  # at once: its worker is still booting
        assert "start one" not in health["workers"]["detail"], health["workers"]
        assert health["workers"]["ok"] is not False, health["workers"]
        names: set[str] = set()

        async def both_answer() -> bool:
            found = await call(second, "health")
            names.update(n for n in found["worker_names"] if n.startswith("demo-"))
            return len(names) >= 2

        deadline = time.monotonic() + 30
        while not await both_answer():
            assert time.monotonic() < deadline, names
        assert len({n.split("@")[0] for n in names}) == len(names)  # one name per server
    text = errlog.read_text()
    assert re.search(r"worker demo-\d+@\S+ \(pid \d+\) starting", text), text
    assert "keeps running for other sessions" in text and "broker stop" in text, text


def test_health_warns_about_two_workers_with_one_name(
    env: dict[str, str], embedded: EmbeddedServer, tmp_path: Path
) -> None:
    name = f"twin-{uuid.uuid4().hex[:6]}@%h"
    twins = [
        {"hostname": name, "concurrency": 1, "pool": "solo", "queues": f"q-{i}"} for i in (1, 2)
    ]
    with started_workers(env, tmp_path, *twins):
        code, health = run_cli(env, "--action", "health")
    assert code == 0, health
    assert "several workers answer as" in health["workers"]["detail"], health["workers"]
    assert "--hostname" in health["workers"]["detail"]


def test_a_new_embedded_server_says_where_it_is(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "elsewhere"
    other = {**env, "CELERY_MCP_DATA_DIR": str(data)}

    def health_stderr() -> str:
        return subprocess.run(
            [sys.executable, "-m", "celery_mcp", "--action", "health"],
            env=other,
            capture_output=True,
            text=True,
            timeout=60,
        ).stderr

    try:
        first = health_stderr()
        assert "started the embedded Valkey" in first and str(data) in first, first
        assert "started the embedded Valkey" not in health_stderr()  # reused: nothing to say
    finally:
        run_cli(other, "broker", "stop")


async def test_serve_with_worker_on_a_new_data_dir_says_where_its_valkey_is(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "fresh"
    other = {**env, "CELERY_MCP_DATA_DIR": str(data)}
    errlog = tmp_path / "serve.err"
    try:
        async with mcp_session(other, "--with-worker", errlog=errlog) as session:
            await session.list_tools()
        text = errlog.read_text()  # serve's own stderr, not its worker's or monitor's log
        assert "started the embedded Valkey" in text and str(data) in text, text
        assert text.index("started the embedded Valkey") < text.index("worker demo-"), text
    finally:
        run_cli(other, "broker", "stop")


# -- what agents are told -----------------------------------------------------------------------


async def test_sends_to_a_queue_nobody_consumes_carry_a_warning(mcp: ClientSession) -> None:
    queue = f"nobody-{uuid.uuid4().hex[:6]}"
    lonely = await call(mcp, "send_task", task_name="demo.add", args=[1, 2], queue=queue)
    assert any(f"no live worker consumes queue {queue!r}" in w for w in lonely["warnings"])
    assert any("celery-mcp worker -Q" in w for w in lonely["warnings"])
    served = await call(mcp, "send_task", task_name="demo.add", args=[1, 2])
    assert not any("no live worker" in w for w in served["warnings"]), served


async def test_workflow_steps_to_an_unconsumed_queue_carry_a_warning(
    env: dict[str, str], worker: Worker
) -> None:
    queue = f"nobody-{uuid.uuid4().hex[:6]}"
    async with mcp_session({**env, "CELERY_MCP_TOOLSETS": "all"}) as session:
        steps = [
            {"task_name": "demo.add", "args": [1, 2]},
            {"task_name": "demo.mul", "args": [3], "queue": queue},
        ]
        sent = await call(session, "chain_tasks", steps=steps)
        assert [w for w in sent["warnings"] if queue in w], sent
        fine = await call(session, "chain_tasks", steps=steps[:1])
        assert fine["warnings"] == [], fine


def test_diagnose_with_no_worker_says_start_one(tmp_path: Path, env: dict[str, str]) -> None:
    alone = {**env, "CELERY_MCP_DATA_DIR": str(tmp_path / "alone")}
    try:
        code, sent = run_cli(
            alone, "--action", "send_task", "--task-name", "demo.add", "--args", "[1, 2]"
        )
        assert code == 0, sent
        code, found = run_cli(alone, "--action", "diagnose")
        assert code == 0, found
        by_check = {f["check"]: f for f in found["findings"]}
        assert "start one with `celery-mcp worker`" in by_check["no_workers"]["summary"]
        queue = by_check["queue_without_consumer"]
        assert "start one" in queue["summary"] and queue["next_tool"] != "control_workers"
    finally:
        run_cli(alone, "broker", "stop")


async def test_a_tool_of_a_disabled_toolset_says_how_to_enable_it(mcp: ClientSession) -> None:
    result = await mcp.call_tool("chord_workflow", {"header": [], "callback": {}})
    error = _error(result)
    assert error["code"] == "forbidden" and "'workflows' toolset" in error["message"]
    assert "CELERY_MCP_TOOLSETS=" in (error["hint"] or "")


async def test_instructions_name_the_opt_in_toolsets(env: dict[str, str]) -> None:
    async with mcp_session(env) as session:
        info = session.initialize_result
    assert info is not None and info.instructions is not None
    assert "workflows" in info.instructions and "schedules" in info.instructions
    assert "CELERY_MCP_TOOLSETS=" in info.instructions


def _error(result: CallToolResult) -> dict[str, Any]:
    """The error of a failed call: one text shape, code first, and the same as data."""
    assert result.is_error, result
    text = error_text(result)
    shape = ERROR_TEXT.match(text)
    assert shape is not None, text
    assert not text.startswith("Error executing tool"), text
    assert result.structured_content is not None, text
    error = dict(result.structured_content["error"])
    assert error["code"] == shape["code"] and error["message"] in text, (error, text)
    return error


@pytest.mark.parametrize(
    ("tool", "arguments", "code"),
    [
        ("send_task", {"task_name": "demo.add", "countdown": "soon"}, "invalid_argument"),
        ("send_task", {"task_name": "demo.add", "prority": 9}, "invalid_argument"),
        ("send_task", {"task_name": "demo.addd", "args": [1, 2]}, "unknown_task"),
        ("send_task", {}, "invalid_argument"),
        ("get_task", {"task_id": "no-such-task-id"}, "not_found"),
        ("no_such_tool", {}, "unknown_tool"),
    ],
)
async def test_every_error_has_one_shape_code_first(
    mcp: ClientSession, tool: str, arguments: dict[str, Any], code: str
) -> None:
    assert _error(await mcp.call_tool(tool, arguments))["code"] == code


async def test_unknown_task_suggests_the_close_name(mcp: ClientSession) -> None:
    error = _error(await mcp.call_tool("send_task", {"task_name": "demo.addd"}))
    assert "did you mean 'demo.add'" in (error["hint"] or ""), error


async def test_get_result_of_an_id_nobody_knows_says_so(mcp: ClientSession) -> None:
    result = await call(mcp, "get_result", task_id=f"never-sent-{uuid.uuid4()}", timeout_s=0.5)
    assert result["status"] == "PENDING" and result["timed_out"]
    assert "neither the result backend nor the task history knows this id" in result["note"]
    sent = await call(mcp, "send_task", task_name="demo.sleep", args=[0.5])
    waiting = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=0)
    assert "history knows" not in (waiting["note"] or "")


def test_cli_errors_have_the_same_shape(env: dict[str, str], embedded: EmbeddedServer) -> None:
    code, out = run_cli(env, "--action", "send_task", "--task-name", "demo.addd")
    assert code != 0 and out["error"]["code"] == "unknown_task", out
    assert set(out["error"]) == {"code", "message", "hint"}


async def test_tools_list_comes_before_the_user_app_and_the_broker(
    env: dict[str, str],
) -> None:
    """Clients spawn the server at launch and some give up on a slow first list: it is
    answered before the user's app is imported (20 s here) or the broker (down) is touched."""
    start = time.monotonic()
    async with mcp_session(env, "--app", "tests.apps.slow_app:app") as session:
        listed = await session.list_tools()
        elapsed = time.monotonic() - start
        default = {t.name for t in listed.tools}
    async with mcp_session(env) as plain:
        assert default == {t.name for t in (await plain.list_tools()).tools}
    assert elapsed < 15, f"tools/list took {elapsed:.1f}s: it waited for the app's import"
