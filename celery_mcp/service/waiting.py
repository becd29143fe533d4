"""Waiting for one task's result, bounded and cancel-aware: Redis pub/sub, the rpc:// reply
drain, or Celery's polling on other backends; the `TaskResult` every waiting tool returns."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import celery.exceptions
from celery.backends.base import BaseKeyValueStoreBackend
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult

from celery_mcp.errors import CeleryMcpError, translate_errors
from celery_mcp.models.common import KNOWN_STATES, READY_STATES, TaskState, Truncation
from celery_mcp.models.tasks import TaskResult
from celery_mcp.service import cancel
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.limits import cap_json, cap_text
from celery_mcp.service.results import task_meta
from celery_mcp.service.rpc_results import drain, uses_rpc
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
    other results the backend is subscribed to (the members of groups and chords sent).

    The first wait reads the state once subscribed: a result stored before was published to
    nobody. Should Redis take that read before the subscription (two connections), a result
    stored in between is read at the end of the slice (WAIT_SLICE_S), not missed."""
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
        # the ready meta the pub/sub message carried (Celery keeps it on the result): no GET
        delivered = getattr(result, "_cache", None)
        return dict(delivered) if delivered else task_meta(cluster, task_id)

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


def wait_for_result(
    cluster: Cluster,
    task_id: str,
    timeout_s: float,
    progress: cancel.Progress | None = None,
    meta: dict[str, Any] | None = None,
) -> TaskResult:
    """Wait up to `timeout_s` (capped by `result_wait_max_s`) for `task_id` to be ready;
    `meta`: its meta when just read."""
    meta = task_meta(cluster, task_id) if meta is None else meta
    start = time.monotonic()
    if meta.get("status") in READY_STATES or timeout_s <= 0:
        return _answer(cluster, task_id, meta, time.monotonic() - start)
    with _waiter(cluster, task_id) as wait_once:
        return _wait(cluster, task_id, meta, wait_once, timeout_s, progress, start)


def _wait(
    cluster: Cluster,
    task_id: str,
    meta: dict[str, Any],
    wait_once: WaitOnce,
    timeout_s: float,
    progress: cancel.Progress | None,
    start: float,
) -> TaskResult:
    deadline = start + min(timeout_s, cluster.settings.result_wait_max_s)
    while meta.get("status") not in READY_STATES:
        cancel.check()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        meta = wait_once(min(WAIT_SLICE_S, remaining))
        if progress is not None and meta.get("status") not in READY_STATES:
            waited = time.monotonic() - start
            progress(waited, timeout_s, _progress_text(meta, waited))
    return _answer(cluster, task_id, meta, time.monotonic() - start)


def _answer(cluster: Cluster, task_id: str, meta: dict[str, Any], waited_s: float) -> TaskResult:
    result = task_result(cluster, task_id, meta, waited_s)
    if result.status == TaskState.PENDING:
        result.note = UNKNOWN_ID_NOTE if _unheard_of(cluster, task_id) else PENDING_NOTE
    return result


def _unheard_of(cluster: Cluster, task_id: str) -> bool:
    """True when the task history has no record of `task_id` and a key-value backend no key
    for it (Celery 5.7's `task_result_exists`: a stored PENDING meta counts). Other backends
    are not asked: on rpc:// a read consumes replies."""
    backend = cluster.app.backend
    try:
        with translate_errors("backend"):
            if cluster.history.get(task_id) is not None:
                return False
            if isinstance(backend, BaseKeyValueStoreBackend):
                return not backend.task_result_exists(task_id)
            return True
    except CeleryMcpError:  # no history store here (or unreadable): nothing to say either way
        return False


def _progress_text(meta: dict[str, Any], waited_s: float) -> str:
    """'PROGRESS {"done": 3} after 2.0s': the state, and what a custom state reported."""
    state = str(meta.get("status", "PENDING"))
    if state in KNOWN_STATES:
        return f"{state} after {waited_s:.1f}s"
    info = json.dumps(meta.get("result"), default=repr)
    short = info if len(info) <= PROGRESS_META_CHARS else info[: PROGRESS_META_CHARS - 1] + "…"
    return f"{state} {short} after {waited_s:.1f}s"
