"""Tasks: send by name, status, bounded result wait, revoke/terminate."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import celery.exceptions
from celery.result import AsyncResult
from celery.utils import uuid

from celery_mcp.errors import translate_errors
from celery_mcp.models.common import KNOWN_STATES, READY_STATES, TaskState, Truncation
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
from celery_mcp.service.catalog import routed_queue
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import expected_workers
from celery_mcp.service.limits import cap_json, cap_text
from celery_mcp.service.registry import Progress
from celery_mcp.service.results import (
    check_result_backend,
    error_text,
    has_result_backend,
    task_meta,
)
from celery_mcp.service.sending import (
    ensure_sendable,
    forget_sent,
    note_sent,
    publish_options,
)
from celery_mcp.service.workflows import (
    saved_group_result,
    saved_group_status,
    workflow_members,
)
from celery_mcp.stores.history import SentTask

PENDING_NOTE = (
    "PENDING means queued and not yet received by a worker, or an id this backend does not "
    "know (never sent, or its result expired)"
)
WAIT_SLICE_S = 1.0
PROGRESS_META_CHARS = 200


def _expires_at(opts: TaskOptions, now: datetime) -> datetime | None:
    if isinstance(opts.expires, int | float):
        return now + timedelta(seconds=opts.expires)
    return opts.expires


def send_task(cluster: Cluster, request: SendTaskInput) -> SendTaskResult:
    """Publish one task after the checks every sender shares."""
    name = request.task_name
    ensure_sendable(
        cluster, name, request.args, request.kwargs, validate=request.validate_args, opts=request
    )
    now = datetime.now(UTC)
    queue = request.queue or routed_queue(cluster, name)
    note = SentTask(uuid(), name, request.args, request.kwargs, queue)
    note_sent(cluster, [note])
    try:
        with translate_errors("broker"):
            cluster.app.send_task(
                name,
                args=request.args,
                kwargs=request.kwargs,
                task_id=note.task_id,
                **publish_options(cluster, request),
            )
    except Exception:
        forget_sent(cluster, [note])
        raise
    eta = request.eta
    if request.countdown is not None:
        eta = now + timedelta(seconds=request.countdown)
    return SendTaskResult(
        task_id=note.task_id,
        task_name=name,
        status=TaskState.PENDING,
        queue=queue,
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
    custom, mcut = custom_meta(cluster, state, meta.get("result"))
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
        meta=custom,
        note=PENDING_NOTE if state == TaskState.PENDING else None,
        truncated=[c for c in (acut, kcut, mcut) if c],
    )


def custom_meta(cluster: Cluster, state: str, info: Any) -> tuple[Any, Truncation | None]:
    """The meta a task stored with a custom state (capped); None for Celery's own states."""
    if state in KNOWN_STATES:
        return None, None
    return cap_json("meta", info, cluster.settings.max_output_bytes)


def task_result(cluster: Cluster, result: AsyncResult, waited_s: float) -> TaskResult:
    """The `TaskResult` of a result whose state was just read, with output caps applied."""
    cap = cluster.settings.max_output_bytes
    with translate_errors("backend"):
        state = str(result.state)
        value = result.result if state in READY_STATES | {TaskState.RETRY} else None
        trace = result.traceback if state in {TaskState.FAILURE, TaskState.RETRY} else None
        custom, mcut = custom_meta(cluster, state, result.info)
    cuts: list[Truncation] = [mcut] if mcut else []
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
        meta=custom,
        waited_s=round(waited_s, 4),
        timed_out=state not in READY_STATES,
        truncated=cuts,
    )


def get_result(
    cluster: Cluster, request: GetResultInput, progress: Progress | None = None
) -> TaskResult:
    """Wait (bounded) for a task's or a saved group's outcome, reporting progress."""
    check_result_backend(cluster)
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
            progress(waited, request.timeout_s, _progress_text(result, waited))
    return task_result(cluster, result, time.monotonic() - start)


def _progress_text(result: AsyncResult, waited_s: float) -> str:
    """'PROGRESS {"done": 3} after 2.0s': the state, and what a custom state reported."""
    state = str(result.state)
    if state in KNOWN_STATES:
        return f"{state} after {waited_s:.1f}s"
    info = json.dumps(result.info, default=repr)
    short = info if len(info) <= PROGRESS_META_CHARS else info[: PROGRESS_META_CHARS - 1] + "…"
    return f"{state} {short} after {waited_s:.1f}s"


def _status_now(cluster: Cluster, task_id: str) -> str | None:
    """The task's status, or None when the app keeps no results."""
    if not has_result_backend(cluster):
        return None
    with translate_errors("backend"):
        return str(AsyncResult(task_id, app=cluster.app).state)


def revoke(cluster: Cluster, request: RevokeInput) -> RevokeResult:
    """Revoke a task, or every task of a workflow id (terminate: a dry run unless confirmed)."""
    before = _status_now(cluster, request.task_id)
    members = workflow_members(cluster, request.task_id)
    ids = members.task_ids if members else [request.task_id]
    what = f"the {len(ids)} tasks of {members.kind} " if members else ""
    signal = request.signal if request.terminate else None
    if request.terminate and not request.confirm:
        return RevokeResult(
            task_id=request.task_id,
            executed=False,
            terminate=True,
            signal=signal,
            status_before=before,
            revoked_count=0,
            message=f"would revoke {what}and send {signal} to what runs; call again with "
            "confirm=true",
        )
    expected = expected_workers(cluster)
    with translate_errors("broker"):
        replies = cluster.app.control.revoke(
            ids,
            terminate=request.terminate,
            signal=signal or "SIGTERM",
            reply=bool(expected),
            limit=expected,
            timeout=cluster.settings.inspect_timeout_s,
        )
    acks = len(replies or [])
    done = " it ran already, nothing to stop;" if before in READY_STATES and not members else ""
    return RevokeResult(
        task_id=request.task_id,
        executed=True,
        terminate=request.terminate,
        signal=signal,
        status_before=before,
        revoked_count=len(ids),
        message=f"revoked {what or 'it'};{done} {acks} worker(s) acknowledged",
    )
