"""Pure logic of the task history and diagnose: event merging, caps, cursors, thresholds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.diagnose import DiagnoseInput, Finding
from celery_mcp.models.history import ListTasksInput
from celery_mcp.service.diagnose import exception_type, p95, rank, stuck_threshold
from celery_mcp.service.history import (
    _state,
    decode_cursor,
    encode_cursor,
    exact_arguments,
    window_bounds,
)
from celery_mcp.stores.history import (
    Relations,
    TaskRecord,
    apply_backend_meta,
    apply_event,
    cap_value,
    history_prefix,
    record_from_meta,
    worker_entry,
)
from celery_mcp.task_failures import exception_text, user_traceback


def event(kind: str, ts: float, **fields: object) -> dict[str, object]:
    return {"type": f"task-{kind}", "uuid": "t1", "timestamp": ts, **fields}


def test_events_in_order_build_the_timeline_and_final_state() -> None:
    rec = TaskRecord()
    apply_event(rec, event("sent", 1.0, name="demo.add", args="(1, 2)", queue="q"), 100)
    apply_event(rec, event("received", 1.1, hostname="w1@h"), 100)
    apply_event(rec, event("started", 1.2, hostname="w1@h"), 100)
    apply_event(rec, event("succeeded", 1.5, result="3", runtime=0.3), 100)
    assert rec.state == "SUCCESS" and rec.first == 1.0
    assert (rec.sent, rec.received, rec.started, rec.succeeded) == (1.0, 1.1, 1.2, 1.5)
    assert rec.worker == "w1@h" and rec.queue == "q" and rec.result == "3"


def test_a_late_event_fills_gaps_but_does_not_move_the_state_back() -> None:
    rec = TaskRecord()
    apply_event(rec, event("started", 2.0, hostname="w1@h"), 100)
    apply_event(rec, event("failed", 2.5, exception="KeyError('x')"), 100)
    apply_event(rec, event("sent", 1.9, name="demo.fail", queue="celery"), 100)
    assert rec.state == "FAILURE" and rec.name == "demo.fail"
    assert rec.first == 1.9 and rec.exception == "KeyError: 'x'"


def test_each_receipt_of_a_task_id_is_counted() -> None:
    """A second copy published under one id (or a redelivery) shows as one more delivery."""
    rec = TaskRecord()
    for ts in (1.0, 3.0):
        apply_event(rec, event("received", ts, hostname="w1@h"), 100)
        apply_event(rec, event("succeeded", ts + 0.5, runtime=0.1), 100)
    assert rec.deliveries == 2 and rec.state == "SUCCESS"
    assert TaskRecord.from_json("t1", rec.to_json()).deliveries == 2


def test_retry_then_success_clears_the_old_exception() -> None:
    rec = TaskRecord()
    apply_event(rec, event("started", 1.0), 100)
    apply_event(rec, event("retried", 1.1, exception="E()", traceback="tb"), 100)
    assert rec.state == "RETRY"
    apply_event(rec, event("received", 2.0, retries=1), 100)
    apply_event(rec, event("started", 2.1), 100)
    apply_event(rec, event("succeeded", 2.2, runtime=0.1), 100)
    assert rec.state == "SUCCESS" and rec.retries == 1
    assert rec.exception is None and rec.traceback is None


def test_exact_arguments_from_the_backend_are_not_overwritten_by_reprs() -> None:
    rec = TaskRecord()
    apply_event(rec, event("failed", 1.0), 100)
    apply_backend_meta(rec, {"args": [1, "a"], "kwargs": {"k": None}, "queue": "q"}, 100)
    apply_event(rec, event("received", 0.9, args="(1, 'a')"), 100)
    assert rec.args == [1, "a"] and rec.exact is True and rec.queue == "q"
    found = exact_arguments(rec, {})
    assert found and (found.args, found.kwargs, found.source) == ([1, "a"], {"k": None}, "backend")
    # a worker's repr of plain literals is parsed (literal_eval: never code) ...
    parsed = exact_arguments(TaskRecord(args="(1, 'a', [2.5, None])", kwargs="{'k': True}"), {})
    assert parsed and (parsed.args, parsed.kwargs, parsed.source) == (
        [1, "a", [2.5, None]],
        {"k": True},
        "repr",
    )
    # ... but not one that was cut, holds objects, or is code
    assert exact_arguments(TaskRecord(args="('x' * 9,)", kwargs="{}"), {}) is None
    assert exact_arguments(TaskRecord(args="(<Foo at 0x1>,)", kwargs="{}"), {}) is None
    assert exact_arguments(TaskRecord(args="(1, b'x')", kwargs="{}"), {}) is None
    assert exact_arguments(TaskRecord(args="('" + "a" * 1100 + "',)", kwargs="{}"), {}) is None
    assert exact_arguments(TaskRecord(args="(1, 2…", kwargs="{}"), {}) is None


def test_fields_are_capped_and_tracebacks_keep_their_end() -> None:
    assert cap_value("x" * 10, 10) == "x" * 10
    assert cap_value("abcdefghijkl", 4) == "abcd…"
    assert cap_value("Traceback...\nValueError: end", 10, tail=True) == "…Error: end"
    assert cap_value(12345, 2) == 12345


def test_worker_events_become_online_or_offline_entries() -> None:
    beat = worker_entry({"type": "worker-heartbeat", "timestamp": 5.0, "freq": 2.0, "active": 1})
    assert beat.status == "online" and beat.ts == 5.0 and beat.freq == 2.0
    assert worker_entry({"type": "worker-offline", "timestamp": 6.0}).status == "offline"


def test_cursor_round_trips_and_bad_cursors_are_refused() -> None:
    assert decode_cursor(encode_cursor(1764098645.123456, "abc-1")) == (1764098645.123456, "abc-1")
    with pytest.raises(InvalidArgument, match="next_cursor"):
        decode_cursor("garbage")


def test_window_bounds_combine_within_since_and_until() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    lo, hi = window_bounds(ListTasksInput(within_s=60, since=since), now=since.timestamp() + 30)
    assert lo == since.timestamp() and hi == float("inf")
    lo, hi = window_bounds(ListTasksInput(until=since))
    assert lo == float("-inf") and hi == since.timestamp()


def test_runtime_falls_back_to_started_until_finished() -> None:
    assert TaskRecord(runtime=0.5).run_time_s == 0.5
    assert TaskRecord(started=10.0, failed=12.5).run_time_s == 2.5
    assert TaskRecord(started=10.0).run_time_s is None


def test_stuck_threshold_uses_explicit_then_p95_then_default() -> None:
    assert stuck_threshold(DiagnoseInput(stuck_after_s=7), [1.0] * 50)[0] == 7
    limit, why = stuck_threshold(DiagnoseInput(stuck_multiple=4), [2.0] * 19 + [3.0])
    assert limit == pytest.approx(4 * p95([2.0] * 19 + [3.0]))  # type: ignore[operator]
    assert "p95" in why
    assert stuck_threshold(DiagnoseInput(), [0.01] * 10)[0] == 5.0  # floor
    assert stuck_threshold(DiagnoseInput(), [1.0])[0] == 600.0  # too little history


def test_exception_type_reads_reprs_and_messages() -> None:
    assert exception_type("RuntimeError('boom')") == "RuntimeError"
    assert exception_type("KeyError: 'x'") == "KeyError"
    assert exception_type(None) == "unknown"


def test_findings_rank_by_severity_then_weight() -> None:
    def finding(check: str, severity: str) -> Finding:
        return Finding(check=check, severity=severity, summary=check)  # type: ignore[arg-type]

    ordered = rank(
        [
            (1.0, finding("a", "info")),
            (5.0, finding("b", "warning")),
            (9.0, finding("c", "warning")),
            (0.0, finding("d", "critical")),
        ]
    )
    assert [f.check for f in ordered] == ["d", "c", "b", "a"]


def test_backfill_builds_a_record_from_a_finished_backend_meta() -> None:
    meta = {
        "status": "FAILURE",
        "date_done": "2026-01-01T00:00:10+00:00",
        "result": {"exc_type": "ValueError", "exc_message": ["bad"]},
        "traceback": "Traceback...\nValueError: bad",
        "name": "demo.fail",
        "args": [1],
        "kwargs": {},
        "queue": "celery",
        "worker": "w1@h",
        "retries": 0,
    }
    rec = record_from_meta(TaskRecord(id="t1"), meta, 100)
    assert rec is not None and rec.state == "FAILURE" and rec.exact is True
    assert rec.failed == rec.first == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    assert str(rec.exception).startswith("ValueError") and rec.name == "demo.fail"
    assert record_from_meta(TaskRecord(id="t1", state="SUCCESS"), meta, 100) is None  # has its end
    assert record_from_meta(TaskRecord(id="t1"), {"status": "STARTED"}, 100) is None  # not finished


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (RuntimeError("boom"), "RuntimeError: boom"),
        ("RuntimeError('boom')", "RuntimeError: boom"),
        ({"exc_type": "RuntimeError", "exc_message": ["boom"]}, "RuntimeError: boom"),
        (KeyError("x"), "KeyError: 'x'"),
        ("KeyError('x')", "KeyError: 'x'"),
        ({"exc_type": "KeyError", "exc_message": ["x"]}, "KeyError: 'x'"),
        ("ValueError(1, 2)", "ValueError: (1, 2)"),
        ("Weird<repr>", "Weird<repr>"),
        ("MyError(<object at 0x1>)", "MyError(<object at 0x1>)"),
    ],
)
def test_every_failure_reads_type_colon_message(value: object, text: str) -> None:
    assert exception_text(value) == text


def test_tracebacks_lose_the_worker_wrapper_frames() -> None:
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/x/celery/app/trace.py", line 1, in trace_task\n'
        "    R = retval = fun(*args, **kwargs)\n"
        '  File "/x/celery_mcp/runtime/worker/retry.py", line 41, in run\n'
        "    return original(*args, **kwargs)\n"
        "           ^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/x/proj/tasks.py", line 9, in fail\n'
        "    raise RuntimeError(message)\n"
        "RuntimeError: boom\n"
    )
    kept = user_traceback(trace)
    assert kept is not None and "retry.py" not in kept and "original(" not in kept
    assert "proj/tasks.py" in kept and kept.endswith("RuntimeError: boom\n")


def test_relations_read_back_as_the_store_writes_them() -> None:
    fields = {"child:c1": "5.0", "retried_as:new2": "20.5", "retried_as:new1": "10.0"}
    rel = Relations.from_fields({**fields, "child:c2": "6.0", "retry_of": "orig"})
    assert rel == Relations(children=["c1", "c2"], retried_as=["new1", "new2"], retry_of="orig")
    assert rel and not Relations.from_fields({})


def test_history_prefix_follows_the_state_stores_prefix() -> None:
    assert history_prefix("proj:") == "proj:celery-mcp:history:"
    assert history_prefix() == "celery-mcp:history:"


def test_the_backends_custom_state_is_newer_than_what_the_history_saw_unless_it_ended() -> None:
    progress = {"status": "PROGRESS", "result": {"done": 1}}
    for seen in ("PENDING", "RECEIVED", "STARTED"):
        assert _state(TaskRecord(id="t", state=seen), progress) == "PROGRESS"
    # an ignore_result task keeps its last custom state in the backend; the history saw it end
    assert _state(TaskRecord(id="t", state="SUCCESS"), progress) == "SUCCESS"
    assert _state(TaskRecord(id="t", state="STARTED"), {"status": "PENDING"}) == "STARTED"
    assert _state(TaskRecord(id="t", state="STARTED"), {"status": "FAILURE"}) == "FAILURE"
