"""Tasks: send by name, status, bounded result wait, revoke/terminate."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import celery.exceptions
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from celery.utils import uuid

from celery_mcp.errors import CeleryMcpError, translate_errors
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
from celery_mcp.service import cancel
from celery_mcp.service.catalog import routed_queue
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import expected_workers
from celery_mcp.service.limits import cap_json, cap_text
from celery_mcp.service.priority import ignored_priority
from celery_mcp.service.registry import Progress
from celery_mcp.service.results import (
    check_result_backend,
    has_result_backend,
    task_meta,
)
from celery_mcp.service.rpc_results import check_visible, drain, uses_rpc
from celery_mcp.service.sending import (
    ensure_sendable,
    forget_sent,
    note_sent,
    publish_options,
    queue_warnings,
)
from celery_mcp.service.workflows import (
    saved_group_result,
    saved_group_status,
    workflow_members,
)
from celery_mcp.stores.history import SentTask
from celery_mcp.task_failures import exception_text, user_traceback

PENDING_NOTE = (
    "PENDING means queued and not yet received by a worker, or an id this backend does not "
    "know (never sent, or its result expired)"
)
UNKNOWN_ID_NOTE = (
    "neither the result backend nor the task history knows this id: it may be mistyped, never "
    "sent, or expired (or queued by a producer that sends no task events); check it with "
    "get_task or list_tasks"
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
    warnings = queue_warnings(cluster, [queue])
    if request.priority is not None:
        target = queue or str(cluster.app.conf.task_default_queue)
        ignored = ignored_priority(cluster, target, request.priority)
        warnings += [ignored] if ignored else []
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
        warnings=warnings,
    )


def get_status(cluster: Cluster, request: TaskIdInput) -> TaskStatus:
    """What the backend knows of a task (or a saved group's aggregate), without waiting."""
    meta = task_meta(cluster, request.task_id)
    state = str(meta.get("status", "PENDING"))
    if state == TaskState.PENDING:  # a saved group id (group_tasks/map_task) -> its aggregate
        group = saved_group_status(cluster, request.task_id)
        if group is not None:
            return group
        if uses_rpc(cluster):
            check_visible(cluster, request.task_id, meta)
    if meta.get("name") is None:  # no result_extended (or rpc://): what the history knows
        meta = _with_history(cluster, request.task_id, meta)
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


def _with_history(cluster: Cluster, task_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` with the name, arguments, worker and queue the task history recorded."""
    try:
        record = cluster.history.get(task_id)
    except Exception:  # no history here (or unreachable): the backend's meta is the answer
        return meta
    if record is None:
        return meta
    known = {
        "name": record.name,
        "args": record.args if record.exact else None,
        "kwargs": record.kwargs if record.exact else None,
        "worker": record.worker,
        "queue": record.queue,
        "retries": record.retries,
    }
    return meta | {k: v for k, v in known.items() if v is not None and meta.get(k) is None}


def custom_meta(cluster: Cluster, state: str, info: Any) -> tuple[Any, Truncation | None]:
    """The meta a task stored with a custom state (capped); None for Celery's own states."""
    if state in KNOWN_STATES:
        return None, None
    return cap_json("meta", info, cluster.settings.max_output_bytes)


def task_result(
    cluster: Cluster, task_id: str, meta: dict[str, Any], waited_s: float
) -> TaskResult:
    """The `TaskResult` of a task meta just read, with output caps applied."""
    cap = cluster.settings.max_output_bytes
    state = str(meta.get("status", "PENDING"))
    value = meta.get("result") if state in READY_STATES | {TaskState.RETRY} else None
    trace = meta.get("traceback") if state in {TaskState.FAILURE, TaskState.RETRY} else None
    custom, mcut = custom_meta(cluster, state, meta.get("result"))
    success = state == TaskState.SUCCESS
    payload, cut = cap_json("result", value, cap) if success else (None, None)
    error, ecut = cap_text("error", None if success else exception_text(value), cap)
    trace, tcut = cap_text("traceback", user_traceback(trace), cap)
    return TaskResult(
        task_id=task_id,
        status=state,
        ready=state in READY_STATES,
        success=success,
        result=payload,
        error=error,
        traceback=trace,
        meta=custom,
        waited_s=round(waited_s, 4),
        timed_out=state not in READY_STATES,
        truncated=[c for c in (mcut, cut, ecut, tcut) if c],
    )


WaitOnce = Callable[[float], dict[str, Any]]


@contextlib.contextmanager
def _waiter(cluster: Cluster, task_id: str) -> Iterator[WaitOnce]:
    """A function that waits up to a slice for the task to be ready and returns its meta then;
    every wait looks at the call's cancel flag each `cancel.POLL_S`."""
    backend = cluster.app.backend
    if uses_rpc(cluster):
        reply_drain = drain(cluster)
        yield lambda slice_s: reply_drain.wait(task_id, slice_s)
    elif isinstance(backend, RedisBackend):
        with _subscribed(cluster, backend, task_id) as wait_once:
            yield wait_once
    else:
        yield lambda slice_s: _polled(cluster, task_id, slice_s)


@contextlib.contextmanager
def _subscribed(cluster: Cluster, backend: RedisBackend, task_id: str) -> Iterator[WaitOnce]:
    """A wait on the pub/sub of this thread's Redis backend, drained in `cancel.POLL_S` steps
    (its `get()` drains in 1 s steps, too long to notice a cancel). Draining also settles the
    other results the backend is subscribed to (the members of groups and chords sent)."""
    result = AsyncResult(task_id, app=cluster.app)
    with translate_errors("backend"):
        backend.add_pending_result(result, weak=True)
    fresh = True

    def wait_once(slice_s: float) -> dict[str, Any]:
        nonlocal fresh
        if fresh:  # a state stored before the subscription was published to nobody
            fresh = False
            meta = task_meta(cluster, task_id)
            if meta.get("status") in READY_STATES:
                return meta
        deadline = time.monotonic() + slice_s
        with translate_errors("backend"):
            while not result.on_ready.ready and (remaining := deadline - time.monotonic()) > 0:
                cancel.check()
                backend.result_consumer.drain_events(timeout=min(cancel.POLL_S, remaining))
        return task_meta(cluster, task_id)

    try:
        yield wait_once
    finally:
        with contextlib.suppress(Exception):
            backend.remove_pending_result(result)


def _polled(cluster: Cluster, task_id: str, slice_s: float) -> dict[str, Any]:
    """Wait up to `slice_s` on a backend that is neither Redis nor rpc:// (Celery polls it)."""
    result = AsyncResult(task_id, app=cluster.app)
    with translate_errors("backend"):
        if result.state not in READY_STATES and slice_s > 0:
            with contextlib.suppress(celery.exceptions.TimeoutError):
                result.get(
                    timeout=slice_s,
                    propagate=False,
                    interval=cancel.POLL_S,
                    on_interval=cancel.check,
                )
    return task_meta(cluster, task_id)  # the backend caches a ready meta: no second read


def get_result(
    cluster: Cluster, request: GetResultInput, progress: Progress | None = None
) -> TaskResult:
    """Wait (bounded) for a task's or a saved group's outcome, reporting progress."""
    check_result_backend(cluster)
    task_id = request.task_id
    meta = task_meta(cluster, task_id)
    if meta.get("status", "PENDING") == TaskState.PENDING:  # maybe a saved group id
        group = saved_group_result(cluster, request, progress)
        if group is not None:
            return group
        if uses_rpc(cluster):
            check_visible(cluster, task_id, meta)
    start = time.monotonic()
    deadline = start + min(request.timeout_s, cluster.settings.result_wait_max_s)
    if meta.get("status") in READY_STATES or deadline <= start:
        return task_result(cluster, task_id, meta, time.monotonic() - start)
    with _waiter(cluster, task_id) as wait_once:
        while meta.get("status") not in READY_STATES:
            cancel.check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            meta = wait_once(min(WAIT_SLICE_S, remaining))
            if progress is not None and meta.get("status") not in READY_STATES:
                waited = time.monotonic() - start
                progress(waited, request.timeout_s, _progress_text(meta, waited))
    result = task_result(cluster, task_id, meta, time.monotonic() - start)
    if result.status == TaskState.PENDING:
        result.note = UNKNOWN_ID_NOTE if _unheard_of(cluster, task_id) else PENDING_NOTE
    return result


def _unheard_of(cluster: Cluster, task_id: str) -> bool:
    """True when the task history has no record of `task_id` (nor can be read)."""
    try:
        with translate_errors("backend"):
            return cluster.history.get(task_id) is None
    except CeleryMcpError:  # no history store here: nothing to say either way
        return False


def _progress_text(meta: dict[str, Any], waited_s: float) -> str:
    """'PROGRESS {"done": 3} after 2.0s': the state, and what a custom state reported."""
    state = str(meta.get("status", "PENDING"))
    if state in KNOWN_STATES:
        return f"{state} after {waited_s:.1f}s"
    info = json.dumps(meta.get("result"), default=repr)
    short = info if len(info) <= PROGRESS_META_CHARS else info[: PROGRESS_META_CHARS - 1] + "…"
    return f"{state} {short} after {waited_s:.1f}s"


def _status_now(cluster: Cluster, task_id: str) -> str | None:
    """The task's status, or None when the app keeps no results."""
    if not has_result_backend(cluster):
        return None
    return str(task_meta(cluster, task_id).get("status", "PENDING"))


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
    ask = bool(expected) or (expected is None and cluster.broker_is_amqp)  # AMQP: wait to hear
    with translate_errors("broker"):
        replies = cluster.app.control.revoke(
            ids,
            terminate=request.terminate,
            signal=signal or "SIGTERM",
            reply=ask,
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
