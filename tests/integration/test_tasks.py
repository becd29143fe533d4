"""Task lifecycle over MCP stdio against the embedded Valkey and a real prefork worker."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from mcp import ClientSession

from tests.support import call, call_error

pytestmark = pytest.mark.anyio


async def test_tools_list_has_schemas_and_annotations(mcp: ClientSession) -> None:
    tools = {t.name: t for t in (await mcp.list_tools()).tools}
    for name in ("send_task", "get_status", "get_result", "revoke", "health"):
        tool = tools[name]
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema and tool.output_schema["type"] == "object"
        assert tool.annotations is not None
    assert tools["get_result"].annotations.read_only_hint is True
    assert tools["revoke"].annotations.destructive_hint is True
    assert "task_name" in tools["send_task"].input_schema["properties"]
    assert tools["send_task"].input_schema["required"] == ["task_name"]


async def test_send_task_and_get_result(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.add", args=[2, 3])
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert result["success"] and result["result"] == 5 and result["status"] == "SUCCESS"
    status = await call(mcp, "get_status", task_id=sent["task_id"])
    assert status["status"] == "SUCCESS" and status["task_name"] == "demo.add"
    assert status["args"] == [2, 3] and status["worker"].startswith("w1@")


async def test_failed_task_reports_error_and_traceback(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.fail", kwargs={"message": "boom"})
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert result["status"] == "FAILURE" and not result["success"]
    assert result["error"] == "RuntimeError: boom"
    assert "RuntimeError" in result["traceback"]


async def test_countdown_is_respected(mcp: ClientSession) -> None:
    start = time.monotonic()
    sent = await call(mcp, "send_task", task_name="demo.noop", countdown=2)
    early = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=1)
    assert not early["ready"] and early["timed_out"]
    done = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert done["success"] and time.monotonic() - start >= 2.0


async def test_eta_is_respected(mcp: ClientSession) -> None:
    eta = datetime.now(UTC) + timedelta(seconds=2)
    sent = await call(mcp, "send_task", task_name="demo.noop", eta=eta.isoformat())
    done = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert done["success"]
    assert datetime.now(UTC) >= eta


async def test_expired_task_is_discarded(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.noop", countdown=2, expires=1)
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert result["status"] == "REVOKED" and not result["success"]


async def test_unknown_task_is_a_clear_error(mcp: ClientSession) -> None:
    text = await call_error(mcp, "send_task", task_name="demo.does_not_exist")
    assert "unknown_task" in text and "demo.does_not_exist" in text


async def test_invalid_options_are_refused(mcp: ClientSession) -> None:
    assert "priority" in await call_error(mcp, "send_task", task_name="demo.add", priority=10)
    text = await call_error(
        mcp, "send_task", task_name="demo.add", countdown=1, eta="2030-01-01T00:00:00Z"
    )
    assert "countdown or eta" in text


async def test_revoke_queued_task(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.noop", countdown=2)
    revoked = await call(mcp, "revoke", task_id=sent["task_id"])
    assert revoked["executed"]
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert result["status"] == "REVOKED"


async def test_terminate_needs_confirm_then_kills_running_task(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.sleep", args=[30])
    tid = sent["task_id"]
    for _ in range(100):
        if (await call(mcp, "get_status", task_id=tid))["status"] == "STARTED":
            break
        await anyio.sleep(0.05)
    dry = await call(mcp, "revoke", task_id=tid, terminate=True, signal="SIGKILL")
    assert not dry["executed"] and "confirm" in dry["message"]
    assert (await call(mcp, "get_status", task_id=tid))["status"] == "STARTED"
    start = time.monotonic()
    done = await call(mcp, "revoke", task_id=tid, terminate=True, signal="SIGKILL", confirm=True)
    assert done["executed"] and done["status_before"] == "STARTED"
    result = await call(mcp, "get_result", task_id=tid, timeout_s=10)
    assert result["status"] == "REVOKED"
    assert time.monotonic() - start < 10


async def test_get_result_timeout_returns_within_bound(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.sleep", args=[5])
    start = time.monotonic()
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=1)
    elapsed = time.monotonic() - start
    assert result["timed_out"] and not result["ready"]
    assert 0.9 <= elapsed < 2.5


async def test_long_wait_does_not_delay_other_calls(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.sleep", args=[5])
    fast: list[float] = []

    async def waiter() -> None:
        await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=10)

    async def quick() -> None:
        await anyio.sleep(0.5)
        start = time.monotonic()
        other = await call(mcp, "send_task", task_name="demo.add", args=[1, 1])
        await call(mcp, "get_result", task_id=other["task_id"], timeout_s=10)
        fast.append(time.monotonic() - start)

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(quick)
    assert fast[0] < 1.5, fast
    assert time.monotonic() - start >= 4.5


async def test_get_result_reports_progress(mcp: ClientSession) -> None:
    sent = await call(mcp, "send_task", task_name="demo.sleep", args=[2.5])
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await mcp.call_tool(
        "get_result", {"task_id": sent["task_id"], "timeout_s": 10}, progress_callback=on_progress
    )
    assert not result.is_error and result.structured_content
    assert result.structured_content["result"] == 2.5
    # one report per second of waiting, seconds waited out of the timeout, with the state
    waited = [p for p, _, _ in seen]
    assert len(seen) >= 2 and waited == sorted(waited) and 1.0 <= waited[-1] <= 3.0, seen
    assert all(total == 10 for _, total, _ in seen), seen
    assert all(m and m.split()[0] in ("PENDING", "STARTED") for _, _, m in seen), seen


async def test_retries_with_backoff_rerun_a_failing_task(mcp: ClientSession) -> None:
    key = f"retry-{time.time_ns()}"
    sent = await call(
        mcp, "send_task", task_name="demo.flaky", args=[key, 2], retries=3, retry_delay_s=0.1
    )
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=15)
    assert result["success"] and result["result"] == "ok after 3 attempts"


async def test_retries_exhausted_end_in_failure(mcp: ClientSession) -> None:
    key = f"retry-{time.time_ns()}"
    sent = await call(
        mcp, "send_task", task_name="demo.flaky", args=[key, 5], retries=1, retry_delay_s=0.1
    )
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=15)
    assert result["status"] == "FAILURE" and "attempt 2 of 5" in result["error"]


async def test_send_task_with_wait_returns_the_result_in_one_call(mcp: ClientSession) -> None:
    done = await call(mcp, "send_task", task_name="demo.add", args=[20, 22], wait_s=10)
    assert done["status"] == "SUCCESS" and done["outcome"]["result"] == 42, done
    assert done["outcome"]["task_id"] == done["task_id"] and not done["outcome"]["timed_out"]
    failed = await call(mcp, "send_task", task_name="demo.fail", kwargs={"message": "x"}, wait_s=10)
    assert failed["outcome"]["error"] == "RuntimeError: x" and failed["status"] == "FAILURE"
    start = time.monotonic()
    slow = await call(mcp, "send_task", task_name="demo.sleep", args=[2], wait_s=0.3)
    assert time.monotonic() - start < 2 and slow["outcome"]["timed_out"], slow
    later = await call(mcp, "get_result", task_id=slow["task_id"], timeout_s=10)
    assert later["success"]
    plain = await call(mcp, "send_task", task_name="demo.noop")
    assert plain["outcome"] is None and plain["status"] == "PENDING"
