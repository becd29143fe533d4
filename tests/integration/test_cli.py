"""`celery-mcp --action ...` as a subprocess against the embedded Valkey and the demo worker.

The seed's actions (send_task, get_result, inspect_workers, ping, health) and the error paths
run as real `python -m celery_mcp` processes; the sweep over every other action calls
`cli.main` in this process (same parsing, same JSON) to spare the shared CPU a process each.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from celery_mcp.interfaces import cli
from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service.registry import OPERATIONS
from tests.support import Worker, run_cli

W1 = f"w1@{socket.gethostname()}"


# -- the seed's actions, as a subprocess --------------------------------------------------------


def test_send_task_then_get_result(env: dict[str, str], worker: Worker) -> None:
    code, sent = run_cli(
        env, "--action", "send_task", "--task-name", "demo.add", "--args", "[2, 3]"
    )
    assert code == 0, sent
    assert sent["task_id"] and sent["task_name"] == "demo.add"
    code, result = run_cli(
        env, "--action", "get_result", "--task-id", sent["task_id"], "--timeout-s", "10"
    )
    assert code == 0, result
    assert result["success"] and result["result"] == 5 and result["status"] == "SUCCESS"
    assert result["ready"] and result["error"] is None


def test_inspect_workers_lists_the_demo_worker(env: dict[str, str], worker: Worker) -> None:
    code, out = run_cli(env, "--action", "inspect_workers", "--destination", json.dumps([W1]))
    assert code == 0, out
    (info,) = out["workers"]
    assert info["hostname"] == W1 and info["stats"]["pool"] == "prefork"
    assert "demo.add" in info["registered"] and info["active_count"] >= 0


def test_ping_alias(env: dict[str, str], worker: Worker) -> None:
    code, out = run_cli(env, "--action", "ping")
    assert code == 0, out
    assert W1 in {w["hostname"] for w in out["active_workers"]}


def test_health(env: dict[str, str], worker: Worker) -> None:
    code, out = run_cli(env, "--action", "health")
    assert code == 0, out
    assert out["ok"] and out["broker"]["ok"] and W1 in out["worker_names"]


def test_failed_task_is_data_not_an_error(env: dict[str, str], worker: Worker) -> None:
    code, sent = run_cli(
        env, "--action", "send_task", "--task-name", "demo.fail", "--kwargs", '{"message": "x"}'
    )
    assert code == 0
    code, result = run_cli(env, "--action", "get_result", "--task-id", sent["task_id"])
    assert code == 0 and result["status"] == "FAILURE" and result["error"] == "RuntimeError: x"


# -- errors: JSON on stdout, non-zero exit ------------------------------------------------------


def _assert_error(code: int, out: Any, want_code: str, want_exit: int) -> dict[str, Any]:
    assert code == want_exit, out
    assert isinstance(out, dict) and set(out) == {"error"}, out
    error: dict[str, Any] = out["error"]
    assert set(error) == {"code", "message", "hint"} and error["code"] == want_code, error
    return error


def test_unknown_task_is_a_json_error(env: dict[str, str], worker: Worker) -> None:
    code, out = run_cli(env, "--action", "send_task", "--task-name", "demo.nope")
    error = _assert_error(code, out, "unknown_task", 1)
    assert "demo.nope" in error["message"]


def test_invalid_arguments_exit_2(env: dict[str, str], embedded: EmbeddedServer) -> None:
    code, out = run_cli(env, "--action", "send_task", "--task-name", "demo.add", "--priority", "10")
    assert "priority" in _assert_error(code, out, "invalid_argument", 2)["message"]
    code, out = run_cli(env, "--action", "get_result")
    assert "task_id" in _assert_error(code, out, "invalid_argument", 2)["message"]
    code, out = run_cli(env, "--action", "no_such_action")
    assert "send_task" in _assert_error(code, out, "invalid_argument", 2)["hint"]
    code, out = run_cli(env, "--action", "health", "stray")
    _assert_error(code, out, "invalid_argument", 2)


def test_unreachable_backend_is_a_json_error(env: dict[str, str]) -> None:
    start = time.monotonic()
    code, out = run_cli(
        env, "--broker-url", "redis://:secret@127.0.0.1:1/0", "--action", "get_status",
        "--task-id", "abc",
    )  # fmt: skip
    error = _assert_error(code, out, "backend_unavailable", 1)
    assert "secret" not in json.dumps(out)
    assert error["hint"]
    assert time.monotonic() - start < 30


def test_bad_setting_is_a_json_error(env: dict[str, str]) -> None:
    code, out = run_cli(env, "--toolsets", "nope", "--action", "health")
    assert "toolsets" in _assert_error(code, out, "invalid_argument", 2)["message"]


# -- help --------------------------------------------------------------------------------------


def test_help_documents_every_action(env: dict[str, str]) -> None:
    code, text = run_cli(env, "--help")
    assert code == 0 and isinstance(text, str)
    for name in OPERATIONS:
        assert f"  {name}" in text, name
    assert "alias: ping" in text
    for sub in ("serve", "worker", "broker"):
        assert sub in text


def test_action_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--action", "help"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in OPERATIONS)
    for name, op in OPERATIONS.items():
        assert cli.main(["--action", name, "--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"celery-mcp --action {name}")
        for field in op.input_model.model_fields:
            assert f"--{field.replace('_', '-')}" in text, (name, field)
    assert cli.main(["--action", "ping", "-h"]) == 0
    assert capsys.readouterr().out.startswith("celery-mcp --action ping  [workers; read-only]")


def test_subcommand_help_is_its_own(env: dict[str, str]) -> None:
    code, text = run_cli(env, "worker", "--help")
    assert code == 0 and "--concurrency" in text and "send_task" not in text


# -- every action, in process -------------------------------------------------------------------


@pytest.fixture
def main_json(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    for key, value in env.items():
        if key.startswith("CELERY_MCP_"):
            monkeypatch.setenv(key, value)

    def run(*args: str) -> tuple[int, Any]:
        code = cli.main(list(args))
        return code, json.loads(capsys.readouterr().out)

    return run


def test_every_action_runs(main_json: Any, worker: Worker) -> None:
    done: set[str] = set()

    def ok(action: str, *fields: str) -> Any:
        code, out = main_json("--action", action, *fields)
        assert code == 0, (action, out)
        done.add(action)
        return out

    tid = ok("send_task", "--task-name", "demo.mul", "--args", "[6, 7]")["task_id"]
    assert ok("get_result", "--task-id", tid, "--timeout-s", "10")["result"] == 42
    assert ok("get_status", "--task-id", tid)["status"] == "SUCCESS"
    late = ok("send_task", "--task-name", "demo.noop", "--countdown", "5")["task_id"]
    assert ok("revoke", "--task-id", late)["executed"]
    assert len(ok("ping_workers", "--destination", json.dumps([W1]))["active_workers"]) == 1
    assert "demo.add" in ok("get_registered_tasks")["tasks"]
    ok("get_active_tasks", "--destination", json.dumps([W1]))
    ok("inspect_workers", "--max-tasks", "1")
    ok("queue_lengths", "--queues", '["celery"]')
    assert not ok("control_workers", "--command", "pool_restart")["executed"]
    assert not ok("purge_queue", "--queue", "cli.empty")["executed"]
    assert not ok("shutdown_workers", "--destination", json.dumps([W1]))["executed"]
    steps = '[{"task_name": "demo.add", "args": [1, 2]}, {"task_name": "demo.mul", "args": [3]}]'
    chain = ok("chain_tasks", "--steps", steps)
    group = ok("group_tasks", "--tasks", '[{"task_name": "demo.add", "args": [1, 1]}]')
    chord = ok(
        "chord_workflow",
        "--header", '[{"task_name": "demo.add", "args": [1, 1]}, {"task_name": "demo.add", "args": [2, 2]}]',  # noqa: E501
        "--callback", '{"task_name": "demo.xsum"}',
    )  # fmt: skip
    mapped = ok("map_task", "--task-name", "demo.add", "--items", "[[1, 2], [3, 4]]")
    assert ok("get_result", "--task-id", chain["workflow_id"])["result"] == 9
    assert ok("get_result", "--task-id", group["workflow_id"])["result"] == [2]
    assert ok("get_result", "--task-id", chord["workflow_id"])["result"] == 6
    assert ok("get_result", "--task-id", mapped["workflow_id"])["result"] == [3, 7]
    assert ok("get_workflow", "--workflow-id", chord["workflow_id"])["ready"]
    assert ok("list_task_types", "--pattern", "demo.*")["total"] >= 8
    assert ok("describe_task", "--task-name", "demo.add")["name"] == "demo.add"
    assert ok("health", "--include-workers", "false")["broker"]["ok"]
    name = f"cli-{time.time_ns()}"
    ok("add_periodic_task", "--name", name, "--task-name", "demo.noop", "--every", "60")
    assert name in {e["name"] for e in ok("list_periodic_tasks")["entries"]}
    assert ok("get_periodic_task", "--name", name)["task_name"] == "demo.noop"
    ok("update_periodic_task", "--name", name, "--crontab", "*/5 * * * *")
    assert not ok("disable_periodic_task", "--name", name)["enabled"]
    assert ok("enable_periodic_task", "--name", name)["enabled"]
    run = ok("run_periodic_task_now", "--name", name)
    assert ok("get_result", "--task-id", run["task_id"])["success"]
    assert ok("remove_periodic_task", "--name", name, "--confirm", "true")["executed"]
    failed = ok("send_task", "--task-name", "demo.fail")["task_id"]
    ok("get_result", "--task-id", failed)
    assert ok("get_task", "--task-id", failed)["status"] == "FAILURE"
    ok("list_tasks", "--limit", "3")
    assert ok("retry_task", "--task-id", failed)["original_id"] == failed
    assert not ok("retry_failed", "--task-name", "demo.fail")["executed"]
    if "diagnose" in OPERATIONS:
        ok("diagnose")
    assert done == set(OPERATIONS), set(OPERATIONS) - done
