"""Tasks: send by name, status, bounded result wait, revoke/terminate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery.utils import uuid

from celery_mcp.errors import Unavailable, translate_errors
from celery_mcp.models.common import READY_STATES, TaskState
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
from celery_mcp.service.cancel import Progress
from celery_mcp.service.catalog import routed_queue
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import expected_workers
from celery_mcp.service.limits import cap_json
from celery_mcp.service.priority import ignored_priority
from celery_mcp.service.results import (
    PENDING_META,
    check_result_backend,
    has_result_backend,
    task_meta,
)
from celery_mcp.service.rpc_results import check_visible, uses_rpc
from celery_mcp.service.sending import (
    ensure_sendable,
    finish_note,
    forget_sent,
    note_published,
    noting_sent,
    publish_options,
    queue_warnings,
)
from celery_mcp.service.waiting import PENDING_NOTE, custom_meta, wait_for_result
from celery_mcp.service.workflows import (
    saved_group_result,
    saved_group_status,
    workflow_members,
)
from celery_mcp.stores.history import SentTask


def _expires_at(opts: TaskOptions, now: datetime) -> datetime | None:
    if isinstance(opts.expires, int | float):
        return now + timedelta(seconds=opts.expires)
    return opts.expires


def send_task(
    cluster: Cluster, request: SendTaskInput, progress: Progress | None = None
) -> SendTaskResult:
    """Publish one task after the checks every sender shares; with `wait_s`, wait for it."""
    name = request.task_name
    ensure_sendable(
        cluster, name, request.args, request.kwargs, validate=request.validate_args, opts=request
    )
    if request.wait_s:  # refused before anything is sent: no result could be waited for
        check_result_backend(cluster)
    now = datetime.now(UTC)
    queue = request.queue or routed_queue(cluster, name)
    note = SentTask(uuid(), name, request.args, request.kwargs, queue)
    outcome = None
    if request.wait_s:
        # Noted, subscribed to and read after the publish, while the task runs (Celery's own
        # get() subscribes after sending too): the read after subscribing finds a result
        # stored before, so none of this is on the way to the broker.
        _publish(cluster, request, note, noted=False)
        pending = note_published(cluster, [note])
        try:
            outcome = wait_for_result(
                cluster, note.task_id, request.wait_s, progress, meta=PENDING_META
            )
        finally:
            finish_note(pending)
    else:
        _publish(cluster, request, note)
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
        status=outcome.status if outcome else TaskState.PENDING,
        queue=queue,
        eta=eta,
        expires=_expires_at(request, now),
        warnings=warnings,
        outcome=outcome,
    )


def _publish(
    cluster: Cluster, request: SendTaskInput, note: SentTask, *, noted: bool = True
) -> None:
    """Publish the task, noted in the history (unless the caller notes it after). The note is
    dropped when the publish failed, kept when it got no answer (the broker may have taken it)."""
    try:
        with noting_sent(cluster, [note] if noted else []), translate_errors("broker"):
            cluster.app.send_task(
                note.name,
                args=request.args,
                kwargs=request.kwargs,
                task_id=note.task_id,
                **publish_options(cluster, request),
            )
    except Unavailable:
        raise
    except Exception:
        if noted:
            forget_sent(cluster, [note])
        raise


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
    return wait_for_result(cluster, task_id, request.timeout_s, progress, meta)


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
