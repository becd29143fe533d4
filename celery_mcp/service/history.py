"""History: list and inspect recorded tasks, re-run failed ones.

The history is written by `celery-mcp monitor` (see `celery_mcp.monitor` for why and how) and
read here; `get_task` and `retry_task` also read the result backend (`result_extended`), which
knows the exact args/kwargs of a finished task.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from celery_mcp.errors import CeleryMcpError, InvalidArgument, NotFound, translate_errors
from celery_mcp.models.common import TaskState, Truncation
from celery_mcp.models.history import (
    GetTaskInput,
    ListTasksInput,
    ListTasksResult,
    RecorderStatus,
    RetryCandidate,
    RetryFailedInput,
    RetryFailedResult,
    RetryTaskInput,
    RetryTaskResult,
    TaskDetail,
    TaskSummary,
    Timeline,
    Window,
)
from celery_mcp.models.tasks import TaskOptions
from celery_mcp.monitor import READY, STATES, HistoryStore, backend_lookup, store_for
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.limits import cap_json, cap_text
from celery_mcp.service.registry import operation
from celery_mcp.service.tasks import ensure_sendable, publish_options

SCAN_BUDGET = 20_000
RETRYABLE = ("FAILURE", "REVOKED")
FINISH_KINDS = ("succeeded", "failed", "revoked", "rejected")
MAX_CHILDREN = 100
ERROR_CHARS = 200


def history_store(cluster: Cluster) -> HistoryStore:
    """The history store of this cluster (one per process)."""
    cached = cluster.cache.get("history_store")
    if cached is None:
        with translate_errors("broker"):
            store = store_for(cluster.settings, cluster.broker_url, cluster.backend_url)
        cached = cluster.cache["history_store"] = (0.0, store)
    store_: HistoryStore = cached[1]
    return store_


def window_bounds(window: Window, now: float | None = None) -> tuple[float, float]:
    """(lo, hi) unix seconds of a window; infinite where open."""
    now = time.time() if now is None else now
    lo, hi = -math.inf, math.inf
    if window.within_s is not None:
        lo = now - window.within_s
    if window.since is not None:
        lo = max(lo, window.since.timestamp())
    if window.until is not None:
        hi = window.until.timestamp()
    return lo, hi


def encode_cursor(score: float, task_id: str) -> str:
    return f"{score!r}|{task_id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(score, id) of a cursor from list_tasks, or InvalidArgument."""
    score, sep, task_id = cursor.partition("|")
    try:
        if not sep or not task_id:
            raise ValueError(cursor)
        return float(score), task_id
    except ValueError:
        raise InvalidArgument(
            f"bad cursor {cursor!r}", hint="pass next_cursor from the previous list_tasks page"
        ) from None


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value is not None else None


def _finished(rec: dict[str, Any]) -> float | None:
    times = [rec[k] for k in FINISH_KINDS if rec.get(k) is not None]
    return float(max(times)) if times else None


def _short(text: Any) -> str | None:
    if text is None:
        return None
    out = str(text)
    return out if len(out) <= ERROR_CHARS else out[: ERROR_CHARS - 1] + "…"


def runtime_s(rec: dict[str, Any]) -> float | None:
    """Run time: the worker's own figure, else started -> finished."""
    if rec.get("runtime") is not None:
        return float(rec["runtime"])
    finished = _finished(rec)
    if rec.get("started") and finished and finished >= float(rec["started"]):
        return round(finished - float(rec["started"]), 6)
    return None


def summary(rec: dict[str, Any]) -> TaskSummary:
    """A listing row of one record."""
    return TaskSummary(
        task_id=rec["id"],
        task_name=rec.get("name"),
        state=TaskState(rec["state"]),
        first_seen=datetime.fromtimestamp(float(rec["first"]), UTC),
        finished=_ts(_finished(rec)),
        runtime_s=runtime_s(rec),
        worker=rec.get("worker"),
        queue=rec.get("queue"),
        retries=rec.get("retries"),
        error=_short(rec.get("exception")) if rec.get("state") in ("FAILURE", "RETRY") else None,
    )


def _sources(
    store: HistoryStore, states: list[str] | None, name_glob: str | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Indexes to walk and (index, state) pairs to count, for a state list and a name glob."""
    if name_glob:
        keys = [
            (key, state)
            for key, state, name in store.name_keys()
            if fnmatchcase(name, name_glob) and (states is None or state in states)
        ]
        return [k for k, _ in keys], keys
    by_state = [(store.key("s", s), s) for s in (states or STATES)]
    if states:
        return [k for k, _ in by_state], by_state
    return [store.key("idx")], by_state


def iter_matching(
    store: HistoryStore,
    sources: list[str],
    lo: float,
    hi: float,
    after: tuple[float, str] | None,
    keep: Callable[[dict[str, Any]], bool],
    *,
    chunk: int = 100,
    budget: int = SCAN_BUDGET,
    stats: dict[str, int] | None = None,
) -> Iterator[tuple[float, str, dict[str, Any] | None]]:
    """(score, id, record) newest first from several indexes, filtered by `keep`.

    When the scan budget runs out it yields one last (score, id, None): where the scan stopped.
    """
    merged = heapq.merge(
        *(store.iter_desc(k, hi, lo, after, batch=chunk) for k in sources), reverse=True
    )
    seen: set[str] = set()
    stats = {} if stats is None else stats
    stats["scanned"] = 0
    while True:
        rows: list[tuple[float, str]] = []
        for score, tid in merged:
            if tid not in seen:
                seen.add(tid)
                rows.append((score, tid))
                if len(rows) >= chunk:
                    break
        if not rows:
            return
        for (score, tid), rec in zip(rows, store.get_many([t for _, t in rows]), strict=True):
            stats["scanned"] += 1
            if rec is not None and keep(rec):
                yield score, tid, rec
            if stats["scanned"] >= budget:
                yield score, tid, None
                return


def recorder_status(store: HistoryStore) -> RecorderStatus:
    """Whether a monitor records the history, and how much is kept."""
    status = store.status()
    last = status["meta"].get("last_event")
    age = round(time.time() - float(last), 1) if last else None
    note = None
    if not status["recording"]:
        note = (
            "no celery-mcp monitor is recording: tasks run now are not added to the history; "
            "start one with `celery-mcp monitor` (or `serve --with-worker`, `worker --monitor`)"
        )
    return RecorderStatus(
        recording=status["recording"],
        last_event_age_s=age,
        tasks_kept=status["tasks"],
        max_tasks=store.max_tasks,
        max_age_s=int(store.max_age_s),
        note=note,
    )


@operation("history", read_only=True)
def list_tasks(cluster: Cluster, request: ListTasksInput) -> ListTasksResult:
    """Recorded tasks newest first, filtered by state, name glob, worker, queue and time; paged,
    with counts by state."""
    store = history_store(cluster)
    lo, hi = window_bounds(request)
    after = decode_cursor(request.cursor) if request.cursor else None
    states = [s.value for s in request.state] if request.state else None
    worker, queue = request.worker, request.queue

    def keep(rec: dict[str, Any]) -> bool:
        if worker and not fnmatchcase(str(rec.get("worker") or ""), worker):
            return False
        return not (queue and not fnmatchcase(str(rec.get("queue") or ""), queue))

    page: list[tuple[float, dict[str, Any]]] = []
    next_cursor: str | None = None
    complete = True
    stats: dict[str, int] = {}
    with translate_errors("broker"):
        sources, count_keys = _sources(store, states, request.task_name)
        counts = store.count(count_keys, lo, hi)
        chunk = request.limit + 1
        for score, tid, rec in iter_matching(
            store, sources, lo, hi, after, keep, chunk=chunk, stats=stats
        ):
            if rec is None:
                next_cursor, complete = encode_cursor(score, tid), False
                break
            if len(page) == request.limit:
                next_cursor = encode_cursor(page[-1][0], page[-1][1]["id"])
                break
            page.append((score, rec))
        recorder = recorder_status(store)
    return ListTasksResult(
        tasks=[summary(rec) for _, rec in page],
        next_cursor=next_cursor,
        counts_by_state=counts,
        scanned=stats.get("scanned", 0),
        complete=complete,
        recorder=recorder,
    )


def backend_meta(cluster: Cluster, task_id: str) -> dict[str, Any]:
    """What the result backend knows of a task ({} when nothing)."""
    with translate_errors("backend"):
        meta = dict(cluster.app.backend.get_task_meta(task_id))
    if meta.get("status", "PENDING") == "PENDING" and not meta.get("name"):
        return {}
    return meta


def _error_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, dict) and "exc_type" in value:
        return f"{value['exc_type']}: {value.get('exc_message')}"
    return str(value)


def _child_ids(children: Any) -> list[str]:
    """Task ids in a backend meta's `children` (serialized result tuples)."""
    ids: list[str] = []
    for item in children or []:
        try:
            head = item[0]
            ids.append(str(head[0] if isinstance(head, list | tuple) else head))
        except (TypeError, IndexError, KeyError):
            continue
    return ids


def _state(rec: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    """The best-known state: the backend's when it is final, else the history's."""
    if meta.get("status") in READY or rec is None:
        return str(meta.get("status", "PENDING"))
    return str(rec["state"])


def exact_arguments(
    rec: dict[str, Any] | None, meta: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]] | None:
    """The task's args and kwargs when known exactly (backend or enriched history), else None."""
    for source in (meta, rec or {}):
        args, kwargs = source.get("args"), source.get("kwargs")
        exact = source is meta or bool(source.get("exact"))
        if exact and isinstance(args, list) and isinstance(kwargs, dict):
            return args, kwargs
    return None


@operation("history", read_only=True)
def get_task(cluster: Cluster, request: GetTaskInput) -> TaskDetail:
    """Everything known about one task: args, timeline, worker, result or traceback,
    parent/children, retry links."""
    tid = request.task_id
    store = history_store(cluster)
    with translate_errors("broker"):
        rec = store.get(tid)
        rel = store.relations(tid)
    meta = backend_meta(cluster, tid)
    if rec is None and not meta and not rel:
        raise NotFound(
            f"no history and no result for task {tid!r}",
            hint="check the id with list_tasks; tasks run while no monitor was recording "
            "are known only until their result expires",
        )
    r = rec or {}
    state = _state(rec, meta)
    cap = cluster.settings.max_output_bytes // 4
    cuts: list[Truncation] = []

    def capped(field: str, value: Any) -> Any:
        out, cut = cap_json(field, value, cap)
        cuts.extend([cut] if cut else [])
        return out

    exact = exact_arguments(rec, meta)
    args, kwargs = exact if exact else (r.get("args"), r.get("kwargs"))
    result = None
    if state == "SUCCESS":
        result = meta["result"] if meta.get("status") == "SUCCESS" else r.get("result")
    exception = None
    if state in ("FAILURE", "RETRY", "REVOKED", "REJECTED"):
        from_meta = meta.get("status") == state and meta.get("result") is not None
        exception = _error_text(meta["result"]) if from_meta else r.get("exception")
    trace, tcut = cap_text("traceback", meta.get("traceback") or r.get("traceback"), cap)
    exception, ecut = cap_text("exception", exception, cap)
    cuts.extend([c for c in (tcut, ecut) if c])
    finished = _finished(r)
    done = meta.get("date_done")
    timeline = Timeline(
        sent=_ts(r.get("sent")),
        received=_ts(r.get("received")),
        started=_ts(r.get("started")),
        retried=_ts(r.get("retried")),
        succeeded=_ts(r.get("succeeded")),
        failed=_ts(r.get("failed")),
        revoked=_ts(r.get("revoked")),
        rejected=_ts(r.get("rejected")),
        finished=_ts(finished) if finished else done,
    )
    children = [k.split(":", 1)[1] for k in rel if k.startswith("child:")]
    children += [c for c in _child_ids(meta.get("children")) if c not in children]
    retried_as = sorted(
        (k.split(":", 1)[1] for k in rel if k.startswith("retried_as:")),
        key=lambda k: float(rel[f"retried_as:{k}"]),
    )
    return TaskDetail(
        task_id=tid,
        task_name=meta.get("name") or r.get("name"),
        state=TaskState(state),
        args=capped("args", args),
        kwargs=capped("kwargs", kwargs),
        args_exact=exact is not None,
        timeline=timeline,
        runtime_s=runtime_s(r),
        worker=meta.get("worker") or r.get("worker"),
        queue=meta.get("queue") or r.get("queue"),
        retries=meta.get("retries") if meta.get("retries") is not None else r.get("retries"),
        eta=r.get("eta"),
        expires=r.get("expires"),
        result=capped("result", result),
        exception=exception,
        traceback=trace,
        parent_id=meta.get("parent_id") or r.get("parent"),
        root_id=r.get("root"),
        children=children[:MAX_CHILDREN],
        children_count=len(children),
        retry_of=rel.get("retry_of"),
        retried_as=retried_as,
        sources=[s for s, known in (("history", rec), ("backend", meta)) if known],
        truncated=cuts,
    )


def _resend(
    cluster: Cluster, store: HistoryStore, tid: str, rec: dict[str, Any] | None, meta: Any
) -> tuple[str, str, str | None]:
    """Re-send a FAILURE/REVOKED task with its original name, args, kwargs and queue."""
    state = _state(rec, meta)
    if state not in RETRYABLE:
        raise InvalidArgument(
            f"task {tid!r} is {state}; retry_task re-sends only FAILURE or REVOKED tasks",
            hint="get_task shows its state; send_task sends a new task",
        )
    name = meta.get("name") or (rec or {}).get("name")
    arguments = exact_arguments(rec, meta)
    if not name or arguments is None:
        raise InvalidArgument(
            f"the original arguments of task {tid!r} are unknown (its result expired, or the "
            "worker's app does not set result_extended)",
            hint="send it again with send_task if you know its arguments",
        )
    args, kwargs = arguments
    queue = meta.get("queue") or (rec or {}).get("queue")
    ensure_sendable(cluster, name, args, kwargs)
    with translate_errors("broker"):
        sent = cluster.app.send_task(
            name, args=args, kwargs=kwargs, **publish_options(TaskOptions(queue=queue))
        )
        store.link_retry(tid, sent.id)
    return str(sent.id), str(name), queue


@operation("history", read_only=False)
def retry_task(cluster: Cluster, request: RetryTaskInput) -> RetryTaskResult:
    """Re-send a FAILURE or REVOKED task with its original name, args and queue; the ids are linked
    both ways."""
    store = history_store(cluster)
    with translate_errors("broker"):
        rec = store.get(request.task_id)
    meta = backend_meta(cluster, request.task_id)
    if rec is None and not meta:
        raise NotFound(
            f"no history and no result for task {request.task_id!r}",
            hint="check the id with list_tasks(state=['FAILURE'])",
        )
    new_id, name, queue = _resend(cluster, store, request.task_id, rec, meta)
    return RetryTaskResult(
        original_id=request.task_id,
        new_task_id=new_id,
        task_name=name,
        queue=queue,
        original_state=TaskState(_state(rec, meta)),
    )


def _metas(cluster: Cluster, ids: list[str]) -> dict[str, dict[str, Any]]:
    lookup = backend_lookup(cluster.app)
    with translate_errors("backend"):
        if lookup is not None:
            return lookup(ids)
        return {i: m for i in ids if (m := backend_meta(cluster, i))}


@operation("history", read_only=False, destructive=True)
def retry_failed(cluster: Cluster, request: RetryFailedInput) -> RetryFailedResult:
    """Re-send recent FAILURE tasks (name glob, time window), skipping retried ones. Needs
    confirm=true, else a dry run."""
    store = history_store(cluster)
    lo, hi = window_bounds(request)
    execute = request.confirm and not request.dry_run
    picked: list[tuple[str, dict[str, Any]]] = []
    skipped: list[RetryCandidate] = []
    more = False
    with translate_errors("broker"):
        sources, _ = _sources(store, ["FAILURE"], request.task_name)
        matches = iter_matching(store, sources, lo, hi, None, lambda _: True, chunk=50)
        for _score, tid, rec in matches:
            if rec is None:
                break
            retried = [k for k in store.relations(tid) if k.startswith("retried_as:")]
            if retried:
                if len(skipped) < request.max_tasks:
                    reason = f"already retried as {retried[-1].split(':', 1)[1]}"
                    skipped.append(
                        RetryCandidate(task_id=tid, task_name=rec.get("name"), skipped=reason)
                    )
                continue
            if len(picked) == request.max_tasks:
                more = True
                break
            picked.append((tid, rec))
    metas = _metas(cluster, [t for t, _ in picked]) if picked else {}
    candidates: list[RetryCandidate] = []
    for tid, rec in picked:
        meta = metas.get(tid, {})
        row = RetryCandidate(task_id=tid, task_name=meta.get("name") or rec.get("name"))
        if exact_arguments(rec, meta) is None:
            row.skipped = "original arguments unknown (result expired or no result_extended)"
        elif execute:
            try:
                row.new_task_id = _resend(cluster, store, tid, rec, meta)[0]
            except CeleryMcpError as exc:
                row.skipped = str(exc)
        candidates.append(row)
    rows = candidates + skipped
    n_skipped = sum(1 for c in rows if c.skipped)
    n_retry = len(rows) - n_skipped
    if execute:
        message = f"re-sent {n_retry} failed task(s); {n_skipped} skipped"
    else:
        message = (
            f"would re-send {n_retry} failed task(s), {n_skipped} skipped; "
            "call again with confirm=true to send"
        )
    return RetryFailedResult(
        executed=execute,
        candidates=rows,
        retried=n_retry,
        skipped=n_skipped,
        more=more,
        message=message,
    )
