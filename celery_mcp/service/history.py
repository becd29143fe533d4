"""History: list and inspect recorded tasks, re-run failed ones.

The history is written by `celery-mcp monitor` (see `runtime.monitor` for why and how) in the
format `stores.history` owns, and read here; `get_task` and `retry_task` also read the result
backend (`result_extended`), which knows the exact args/kwargs of a finished task.
"""

from __future__ import annotations

import ast
import heapq
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from celery.utils import uuid

from celery_mcp.errors import CeleryMcpError, InvalidArgument, NotFound, translate_errors
from celery_mcp.models.common import KNOWN_STATES, NOT_RUN, READY_STATES, Truncation
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
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.limits import cap_json, cap_text
from celery_mcp.service.results import known_meta, known_metas
from celery_mcp.service.sending import ensure_sendable, noting_sent, publish_options
from celery_mcp.stores.history import (
    STATES,
    HistoryStore,
    Relations,
    SentTask,
    TaskRecord,
    record_from_meta,
)
from celery_mcp.task_failures import exception_text, user_traceback

SCAN_BUDGET = 20_000
RETRYABLE = ("FAILURE", "REVOKED")
MAX_CHILDREN = 100
ERROR_CHARS = 200


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


def _short(text: Any) -> str | None:
    if text is None:
        return None
    out = str(text)
    return out if len(out) <= ERROR_CHARS else out[: ERROR_CHARS - 1] + "…"


def summary(rec: TaskRecord) -> TaskSummary:
    """A listing row of one record."""
    return TaskSummary(
        task_id=rec.id,
        task_name=rec.name,
        status=rec.state or "PENDING",
        first_seen=datetime.fromtimestamp(rec.first, UTC),
        finished=_ts(rec.finished),
        runtime_s=rec.run_time_s,
        worker=rec.worker,
        queue=rec.queue,
        retries=rec.retries,
        error=_short(rec.exception) if rec.state in ("FAILURE", "RETRY") else None,
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
    keep: Callable[[TaskRecord], bool],
    *,
    chunk: int = 100,
    budget: int = SCAN_BUDGET,
    stats: dict[str, int] | None = None,
) -> Iterator[tuple[float, str, TaskRecord | None]]:
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


def history_store(cluster: Cluster) -> HistoryStore:
    """The cluster's history store (Unavailable when there is no Redis to keep it in)."""
    with translate_errors("broker"):
        return cluster.history


def list_tasks(cluster: Cluster, request: ListTasksInput) -> ListTasksResult:
    """A page of recorded tasks, newest first, with counts by state."""
    store = history_store(cluster)
    lo, hi = window_bounds(request)
    after = decode_cursor(request.cursor) if request.cursor else None
    states = list(request.status) if request.status else None
    worker, queue = request.worker, request.queue

    def keep(rec: TaskRecord) -> bool:
        if worker and not fnmatchcase(rec.worker or "", worker):
            return False
        return not (queue and not fnmatchcase(rec.queue or "", queue))

    page: list[tuple[float, TaskRecord]] = []
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
                next_cursor = encode_cursor(page[-1][0], page[-1][1].id)
                break
            page.append((score, rec))
        recorder = recorder_status(store)
    return ListTasksResult(
        tasks=[summary(rec) for _, rec in page],
        next_cursor=next_cursor,
        counts_by_status=counts,
        scanned=stats.get("scanned", 0),
        complete=complete,
        recorder=recorder,
    )


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


def _state(rec: TaskRecord | None, meta: dict[str, Any]) -> str:
    """The best-known state: the backend's when it is final, or a custom one (PROGRESS: set
    while the task runs, so newer than the RECEIVED/STARTED the history saw) unless the history
    saw the task end (an ignore_result task keeps its last custom state); else the history's."""
    backend = str(meta.get("status", "PENDING"))
    if backend in READY_STATES or rec is None or rec.state is None:
        return backend
    if backend not in KNOWN_STATES and rec.state not in READY_STATES:
        return backend
    return rec.state


@dataclass(frozen=True)
class Arguments:
    """A task's exact args and kwargs, and where they came from."""

    args: list[Any]
    kwargs: dict[str, Any]
    #: "backend" (result_extended), "sent" (noted when this project sent it), "repr" (the
    #: worker's repr of them, parsed: only when it was not cut)
    source: str


#: Celery cuts a task's argsrepr/kwargsrepr at this many characters (`argsrepr_maxsize`).
REPR_MAX_CHARS = 1024


def _json_literal(text: Any) -> Any:
    """A Python literal (the worker's repr of args or kwargs) as JSON values, or None when it
    is not one, or was cut. `ast.literal_eval` evaluates literals only, never code."""
    if not isinstance(text, str) or len(text) >= REPR_MAX_CHARS or text.endswith("…"):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            return {k: plain(x) for k, x in v.items()}
        if v is None or isinstance(v, bool | int | float | str):
            return v
        raise ValueError(f"not JSON: {type(v).__name__}")

    try:
        return plain(value)
    except ValueError:
        return None


def exact_arguments(rec: TaskRecord | None, meta: dict[str, Any]) -> Arguments | None:
    """The task's args and kwargs when known exactly, else None: from the result backend
    (result_extended), from what this project noted when it sent the task, or from the
    worker's repr of them when that parses as plain literals and was not cut."""
    args, kwargs = meta.get("args"), meta.get("kwargs")
    if isinstance(args, list) and isinstance(kwargs, dict):
        return Arguments(args, kwargs, "backend")
    if rec is None:
        return None
    if rec.exact and isinstance(rec.args, list) and isinstance(rec.kwargs, dict):
        return Arguments(rec.args, rec.kwargs, rec.args_source or "backend")
    parsed_args, parsed_kwargs = _json_literal(rec.args), _json_literal(rec.kwargs or "{}")
    if isinstance(parsed_args, list) and isinstance(parsed_kwargs, dict):
        return Arguments(parsed_args, parsed_kwargs, "repr")
    return None


@dataclass
class _Capper:
    """Caps output fields to one share of the output cap, noting every cut."""

    cap: int
    cuts: list[Truncation]

    def json(self, field: str, value: Any) -> Any:
        out, cut = cap_json(field, value, self.cap)
        self.cuts.extend([cut] if cut else [])
        return out

    def text(self, field: str, value: str | None) -> str | None:
        out, cut = cap_text(field, value, self.cap)
        self.cuts.extend([cut] if cut else [])
        return out


def _timeline(rec: TaskRecord, meta: dict[str, Any]) -> Timeline:
    finished = rec.finished
    return Timeline(
        sent=_ts(rec.sent),
        received=_ts(rec.received),
        started=_ts(rec.started),
        retried=_ts(rec.retried),
        succeeded=_ts(rec.succeeded),
        failed=_ts(rec.failed),
        revoked=_ts(rec.revoked),
        rejected=_ts(rec.rejected),
        finished=_ts(finished) if finished else meta.get("date_done"),
    )


def _outcome(
    state: str, rec: TaskRecord, meta: dict[str, Any], capper: _Capper
) -> tuple[Any, str | None, str | None]:
    """(result, exception, traceback): the backend's when it has this state, else the history's."""
    from_meta = meta.get("status") == state
    result = None
    if state == "SUCCESS":
        result = capper.json("result", meta["result"] if from_meta else rec.result)
    exception = None
    if state in ("FAILURE", "RETRY", "REVOKED", "REJECTED"):
        has = from_meta and meta.get("result") is not None
        exception = capper.text(
            "exception", exception_text(meta["result"] if has else rec.exception)
        )
    trace = capper.text("traceback", user_traceback(meta.get("traceback") or rec.traceback))
    return result, exception, trace


def _children(rel: Relations, meta: dict[str, Any]) -> list[str]:
    """The children the history saw, then those only the backend knows."""
    return rel.children + [c for c in _child_ids(meta.get("children")) if c not in rel.children]


def get_task(cluster: Cluster, request: GetTaskInput) -> TaskDetail:
    """Everything the history and the result backend know of one task."""
    tid = request.task_id
    store = history_store(cluster)
    with translate_errors("broker"):
        found = store.get(tid)
        rel = store.relations(tid)
    meta = known_meta(cluster, tid)
    if found is None and not meta and not rel:
        raise NotFound(
            f"no history and no result for task {tid!r}",
            hint="check the id with list_tasks; tasks run while no monitor was recording "
            "are known only until their result expires",
        )
    rec = found or TaskRecord(id=tid)
    state = _state(found, meta)
    capper = _Capper(cluster.settings.max_output_bytes // 4, [])
    exact = exact_arguments(found, meta)
    args, kwargs = (exact.args, exact.kwargs) if exact else (rec.args, rec.kwargs)
    result, exception, trace = _outcome(state, rec, meta, capper)
    with translate_errors("broker"):
        blocked_by = rec.blocked_by or _copied_failure(store, tid, found, meta)
    if blocked_by is not None:  # Celery's copy of an earlier step's failure: it never ran
        state, exception, trace = NOT_RUN, None, None
    children = _children(rel, meta)
    retries = meta.get("retries")
    custom = state not in KNOWN_STATES and meta.get("status") == state  # e.g. PROGRESS
    return TaskDetail(
        task_id=tid,
        task_name=meta.get("name") or rec.name,
        status=state,
        args=capper.json("args", args),
        kwargs=capper.json("kwargs", kwargs),
        args_exact=exact is not None,
        timeline=_timeline(rec, meta),
        runtime_s=rec.run_time_s,
        worker=meta.get("worker") or rec.worker,
        queue=meta.get("queue") or rec.queue,
        retries=retries if retries is not None else rec.retries,
        eta=rec.eta,
        expires=rec.expires,
        result=result,
        exception=exception,
        traceback=trace,
        meta=capper.json("meta", meta.get("result")) if custom else None,
        parent_id=meta.get("parent_id") or rec.parent,
        root_id=rec.root,
        children=children[:MAX_CHILDREN],
        children_count=len(children),
        deliveries=rec.deliveries,
        retry_of=rel.retry_of,
        retried_as=rel.retried_as,
        blocked_by=blocked_by,
        sources=[s for s, known in (("history", found), ("backend", meta)) if known],
        truncated=capper.cuts,
    )


def _copied_failure(
    store: HistoryStore, task_id: str, found: TaskRecord | None, meta: dict[str, Any]
) -> str | None:
    """The failed chain step whose failure the backend holds for this task too, if the task
    never ran (see `HistoryStore.failed_upstream`)."""
    if found is not None and (found.received or found.started):
        return None
    probe = record_from_meta(TaskRecord(id=task_id), meta, store.cap)
    return None if probe is None else store.failed_upstream(probe)


@dataclass(frozen=True)
class Resend:
    """A checked re-send of one failed task: what it would send."""

    original: str
    name: str
    arguments: Arguments
    queue: str | None


def prepare_resend(
    cluster: Cluster, tid: str, rec: TaskRecord | None, meta: dict[str, Any]
) -> Resend:
    """The re-send of a FAILURE/REVOKED task, checked as any send is (InvalidArgument when it
    cannot be sent: wrong state, arguments unknown, task unknown or not allowed)."""
    state = _state(rec, meta)
    if state not in RETRYABLE:
        raise InvalidArgument(
            f"task {tid!r} is {state}; retry_task re-sends only FAILURE or REVOKED tasks",
            hint="get_task shows its state; send_task sends a new task",
        )
    name = meta.get("name") or (rec.name if rec else None)
    arguments = exact_arguments(rec, meta)
    if not name or arguments is None:
        raise InvalidArgument(
            f"the original arguments of task {tid!r} are unknown (not sent by this server, its "
            "result expired or the worker's app does not set result_extended, and the "
            "worker's repr of them was cut or is not plain data)",
            hint="send it again with send_task if you know its arguments",
        )
    queue = meta.get("queue") or (rec.queue if rec else None)
    ensure_sendable(cluster, name, arguments.args, arguments.kwargs)
    return Resend(tid, str(name), arguments, queue)


def publish_resend(cluster: Cluster, store: HistoryStore, resend: Resend) -> str:
    """Send a prepared re-send and link the new id to the original; the new id."""
    note = SentTask(
        uuid(), resend.name, resend.arguments.args, resend.arguments.kwargs, resend.queue
    )
    with noting_sent(cluster, [note]), translate_errors("broker"):
        cluster.app.send_task(
            resend.name,
            args=resend.arguments.args,
            kwargs=resend.arguments.kwargs,
            task_id=note.task_id,
            **publish_options(cluster, TaskOptions(queue=resend.queue)),
        )
    with translate_errors("broker"):
        store.link_retry(resend.original, note.task_id)
    return note.task_id


def retry_task(cluster: Cluster, request: RetryTaskInput) -> RetryTaskResult:
    """Re-send one failed or revoked task and link the two ids."""
    store = history_store(cluster)
    with translate_errors("broker"):
        rec = store.get(request.task_id)
    meta = known_meta(cluster, request.task_id)
    if rec is None and not meta:
        raise NotFound(
            f"no history and no result for task {request.task_id!r}",
            hint="check the id with list_tasks(status=['FAILURE'])",
        )
    resend = prepare_resend(cluster, request.task_id, rec, meta)
    return RetryTaskResult(
        original_id=request.task_id,
        new_task_id=publish_resend(cluster, store, resend),
        task_name=resend.name,
        queue=resend.queue,
        original_status=_state(rec, meta),
        args_source=resend.arguments.source,
    )


def retry_failed(cluster: Cluster, request: RetryFailedInput) -> RetryFailedResult:
    """Re-send recent failed tasks in bulk (a dry run unless confirmed)."""
    store = history_store(cluster)
    lo, hi = window_bounds(request)
    execute = request.confirm and not request.dry_run
    picked: list[tuple[str, TaskRecord]] = []
    skipped: list[RetryCandidate] = []
    more = False
    with translate_errors("broker"):
        sources, _ = _sources(store, ["FAILURE"], request.task_name)
        matches = iter_matching(store, sources, lo, hi, None, lambda _: True, chunk=50)
        for _score, tid, rec in matches:
            if rec is None:
                break
            retried = store.relations(tid).retried_as
            if retried:
                if len(skipped) < request.max_tasks:
                    reason = f"already retried as {retried[-1]}"
                    skipped.append(RetryCandidate(task_id=tid, task_name=rec.name, skipped=reason))
                continue
            if len(picked) == request.max_tasks:
                more = True
                break
            picked.append((tid, rec))
    found = known_metas(cluster, [t for t, _ in picked]) if picked else {}
    candidates: list[RetryCandidate] = []
    for tid, rec in picked:  # the dry run checks each as the confirmed call does
        meta = found.get(tid, {})
        row = RetryCandidate(task_id=tid, task_name=meta.get("name") or rec.name)
        try:
            resend = prepare_resend(cluster, tid, rec, meta)
            if execute:
                row.new_task_id = publish_resend(cluster, store, resend)
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
