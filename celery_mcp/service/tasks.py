"""Tasks: send by name, status, bounded result wait, revoke/terminate."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import celery.exceptions
from celery.result import AsyncResult

from celery_mcp.errors import translate_errors
from celery_mcp.models.common import READY_STATES, TaskState, Truncation
from celery_mcp.models.tasks import (
    GetResultInput,
    RevokeInput,
    RevokeResult,
    SendTaskInput,
    SendTaskResult,
    TaskIdInput,
    TaskOptions,
    TaskResult,
    TaskStatus,
)
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import expected_workers
from celery_mcp.service.limits import cap_json, cap_text
from celery_mcp.service.registry import Progress
from celery_mcp.service.results import error_text, task_meta
from celery_mcp.service.sending import ensure_sendable, publish_options
from celery_mcp.service.workflows import saved_group_result, saved_group_status

PENDING_NOTE = (
    "PENDING means queued and not yet received by a worker, or an id this backend does not "
    "know (never sent, or its result expired)"
)
WAIT_SLICE_S = 1.0


def _expires_at(opts: TaskOptions, now: datetime) -> datetime | None:
    if isinstance(opts.expires, int | float):
        return now + timedelta(seconds=opts.expires)
    return opts.expires


def send_task(cluster: Cluster, request: SendTaskInput) -> SendTaskResult:
    """Publish one task after the checks every sender shares."""
    ensure_sendable(
        cluster, request.task_name, request.args, request.kwargs, validate=request.validate_args
    )
    now = datetime.now(UTC)
    with translate_errors("broker"):
        result = cluster.app.send_task(
            request.task_name,
            args=request.args,
            kwargs=request.kwargs,
            **publish_options(request),
        )
    eta = request.eta
    if request.countdown is not None:
        eta = now + timedelta(seconds=request.countdown)
    return SendTaskResult(
        task_id=result.id,
        task_name=request.task_name,
        status=TaskState.PENDING,
        queue=request.queue,
        eta=eta,
        expires=_expires_at(request, now),
    )


def get_status(cluster: Cluster, request: TaskIdInput) -> TaskStatus:
    """What the backend knows of a task (or a saved group's aggregate), without waiting."""
    meta = task_meta(cluster, request.task_id)
    state = str(meta.get("status", "PENDING"))
    if state == TaskState.PENDING:  # a saved group id (group_tasks/map_task) -> its aggregate
        group = saved_group_status(cluster, request.task_id)
        if group is not None:
            return group
    args, acut = cap_json("args", meta.get("args"), cluster.settings.max_output_bytes)
    kwargs, kcut = cap_json("kwargs", meta.get("kwargs"), cluster.settings.max_output_bytes)
    delivery = meta.get("delivery_info") or {}
    return TaskStatus(
        task_id=request.task_id,
        status=state,
        ready=state in READY_STATES,
        task_name=meta.get("name"),
        args=args if isinstance(args, list) else None,
        kwargs=kwargs if isinstance(kwargs, dict) else None,
        worker=meta.get("worker"),
        queue=meta.get("queue") or delivery.get("routing_key"),
        retries=meta.get("retries"),
        date_done=meta.get("date_done"),
        note=PENDING_NOTE if state == TaskState.PENDING else None,
        truncated=[c for c in (acut, kcut) if c],
    )


def task_result(cluster: Cluster, result: AsyncResult, waited_s: float) -> TaskResult:
    """The `TaskResult` of a result whose state was just read, with output caps applied."""
    cap = cluster.settings.max_output_bytes
    with translate_errors("backend"):
        state = str(result.state)
        value = result.result if state in READY_STATES | {TaskState.RETRY} else None
        trace = result.traceback if state in {TaskState.FAILURE, TaskState.RETRY} else None
    cuts: list[Truncation] = []
    success = state == TaskState.SUCCESS
    payload, cut = cap_json("result", value, cap) if success else (None, None)
    error = None if success else error_text(value)
    error, ecut = cap_text("error", error, cap)
    trace, tcut = cap_text("traceback", trace, cap)
    cuts += [c for c in (cut, ecut, tcut) if c]
    return TaskResult(
        task_id=result.id,
        status=state,
        ready=state in READY_STATES,
        success=success,
        result=payload,
        error=error,
        traceback=trace,
        waited_s=round(waited_s, 4),
        timed_out=state not in READY_STATES,
        truncated=cuts,
    )


def get_result(
    cluster: Cluster, request: GetResultInput, progress: Progress | None = None
) -> TaskResult:
    """Wait (bounded) for a task's or a saved group's outcome, reporting progress."""
    result = AsyncResult(request.task_id, app=cluster.app)
    with translate_errors("backend"):
        pending = result.state == TaskState.PENDING  # cached by the result once it is ready
    if pending:  # maybe a saved group id (group_tasks/map_task), which has no state of its own
        group = saved_group_result(cluster, request, progress)
        if group is not None:
            return group
    start = time.monotonic()
    deadline = start + min(request.timeout_s, cluster.settings.result_wait_max_s)
    while True:
        remaining = deadline - time.monotonic()
        with translate_errors("backend"):
            if result.state in READY_STATES or remaining <= 0:
                break
            try:
                result.get(timeout=min(WAIT_SLICE_S, remaining), propagate=False, interval=0.05)
                break
            except celery.exceptions.TimeoutError:
                pass
        if progress is not None:
            waited = time.monotonic() - start
            progress(waited, request.timeout_s, f"{result.state} after {waited:.1f}s")
    return task_result(cluster, result, time.monotonic() - start)


def revoke(cluster: Cluster, request: RevokeInput) -> RevokeResult:
    """Revoke a task (terminate: a dry run unless confirmed)."""
    with translate_errors("backend"):
        before = str(AsyncResult(request.task_id, app=cluster.app).state)
    signal = request.signal if request.terminate else None
    if request.terminate and not request.confirm:
        return RevokeResult(
            task_id=request.task_id,
            executed=False,
            terminate=True,
            signal=signal,
            status_before=before,
            message=f"would revoke and send {signal} if running; call again with confirm=true",
        )
    expected = expected_workers(cluster)
    with translate_errors("broker"):
        replies = cluster.app.control.revoke(
            request.task_id,
            terminate=request.terminate,
            signal=signal or "SIGTERM",
            reply=bool(expected),
            limit=expected,
            timeout=cluster.settings.inspect_timeout_s,
        )
    acks = len(replies or [])
    return RevokeResult(
        task_id=request.task_id,
        executed=True,
        terminate=request.terminate,
        signal=signal,
        status_before=before,
        message=f"revoke sent; {acks} worker(s) acknowledged"
        + ("; it ran already, nothing to stop" if before in READY_STATES else ""),
    )
