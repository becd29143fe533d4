"""Tasks: send by name, status, bounded result wait, revoke/terminate."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.result import AsyncResult

from celery_mcp.errors import UnknownTask, translate_errors
from celery_mcp.models.common import TaskState, Truncation
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
from celery_mcp.retry_policy import retry_headers
from celery_mcp.security import check_task_allowed
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import expected_workers, is_known_task
from celery_mcp.service.limits import cap_json, cap_text, check_payload
from celery_mcp.service.registry import Progress, operation

READY_STATES = {TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED, TaskState.REJECTED}
PENDING_NOTE = (
    "PENDING means queued and not yet received by a worker, or an id this backend does not "
    "know (never sent, or its result expired)"
)
WAIT_SLICE_S = 1.0


def publish_options(opts: TaskOptions) -> dict[str, Any]:
    """Celery `apply_async` options for `opts`: routing, delays, retry headers.

    `retry=True` applies the app's `task_publish_retry_policy`; client apps set it to no retry
    (see `app.bounded_config`), so a broker that does not answer fails the call at once.
    """
    options: dict[str, Any] = {"retry": True}
    for key in ("countdown", "eta", "expires", "queue", "priority"):
        value = getattr(opts, key)
        if value is not None:
            options[key] = value
    if opts.retries:
        options["headers"] = retry_headers(opts.retries, opts.retry_delay_s, opts.retry_delay_max_s)
    return options


def ensure_sendable(
    cluster: Cluster, name: str, args: Any, kwargs: Any, *, validate: bool = True
) -> None:
    """Raise when `name` is unknown or args/kwargs exceed the caps; nothing is sent.

    Every path that publishes a task (send_task, workflow steps, periodic entries) calls this
    first. `validate=False` skips the signature check (tasks with dynamic signatures).
    """
    s = cluster.settings
    check_task_allowed(s, name)
    check_payload(args, kwargs, max_bytes=s.max_payload_bytes, max_depth=s.max_depth)
    if not is_known_task(cluster, name):
        raise UnknownTask(
            f"unknown task {name!r}: no live worker and no imported app registers it",
            hint="check the name with list_task_types or the workers with health",
        )
    if validate:  # signature check (catalog): arity, keywords, types
        from celery_mcp.service.catalog import check_arguments

        check_arguments(cluster, name, args, kwargs)


def _expires_at(opts: TaskOptions, now: datetime) -> datetime | None:
    if isinstance(opts.expires, int | float):
        return now + timedelta(seconds=opts.expires)
    return opts.expires


@operation("tasks", read_only=False)
def send_task(cluster: Cluster, request: SendTaskInput) -> SendTaskResult:
    """Send a task by name (args, kwargs, countdown, eta, expires, queue, priority, retries).
    Returns task_id at once."""
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
        state=TaskState.PENDING,
        queue=request.queue,
        eta=eta,
        expires=_expires_at(request, now),
    )


def _meta(cluster: Cluster, task_id: str) -> dict[str, Any]:
    with translate_errors("backend"):
        return dict(cluster.app.backend.get_task_meta(task_id))


@operation("tasks", read_only=True)
def get_status(cluster: Cluster, request: TaskIdInput) -> TaskStatus:
    """A task's current state and metadata (name, args, worker, retries), without waiting."""
    meta = _meta(cluster, request.task_id)
    state = TaskState(meta.get("status", "PENDING"))
    if state == TaskState.PENDING:  # a saved group id (group_tasks/map_task) -> its aggregate
        from celery_mcp.service.workflows import saved_group_status

        group = saved_group_status(cluster, request.task_id)
        if group is not None:
            return group
    args, acut = cap_json("args", meta.get("args"), cluster.settings.max_output_bytes)
    kwargs, kcut = cap_json("kwargs", meta.get("kwargs"), cluster.settings.max_output_bytes)
    delivery = meta.get("delivery_info") or {}
    return TaskStatus(
        task_id=request.task_id,
        state=state,
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


def _error_text(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


def task_result(cluster: Cluster, result: AsyncResult, waited_s: float) -> TaskResult:
    """The `TaskResult` of a result whose state was just read, with output caps applied."""
    cap = cluster.settings.max_output_bytes
    with translate_errors("backend"):
        state = TaskState(result.state)
        value = result.result if state in READY_STATES | {TaskState.RETRY} else None
        trace = result.traceback if state in {TaskState.FAILURE, TaskState.RETRY} else None
    cuts: list[Truncation] = []
    success = state == TaskState.SUCCESS
    payload, cut = cap_json("result", value, cap) if success else (None, None)
    error = None if success or value is None else _error_text(value)
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


@operation("tasks", read_only=True, wait_field="timeout_s")
def get_result(
    cluster: Cluster, request: GetResultInput, progress: Progress | None = None
) -> TaskResult:
    """Wait up to timeout_s for a task's result or error; on timeout returns timed_out=true (call
    again)."""
    import celery.exceptions

    from celery_mcp.service.workflows import saved_group_result

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
            if result.ready() or remaining <= 0:
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


@operation("tasks", read_only=False, destructive=True, idempotent=True)
def revoke(cluster: Cluster, request: RevokeInput) -> RevokeResult:
    """Revoke a task; terminate=true also kills it if running (needs confirm=true, else a
    dry run)."""
    with translate_errors("backend"):
        before = TaskState(AsyncResult(request.task_id, app=cluster.app).state)
    signal = request.signal if request.terminate else None
    if request.terminate and not request.confirm:
        return RevokeResult(
            task_id=request.task_id,
            executed=False,
            terminate=True,
            signal=signal,
            state_before=before,
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
        state_before=before,
        message=f"revoke sent; {acks} worker(s) acknowledged"
        + ("; it ran already, nothing to stop" if before in READY_STATES else ""),
    )
