"""The task history in Redis/Valkey: its typed records, how events build them, and its store.

This module owns the format. `celery-mcp monitor` (runtime.monitor) writes it from Celery
events; the history tools and diagnose (service) read it. Layout under `keys.HISTORY_PREFIX`
in the broker's Redis db (the result backend's when the broker is not Redis):

    t:<id>             string  the task's TaskRecord as JSON (fields capped); expires after max age
    a:<id>             string  exact args/kwargs of a task sent here, noted after its events had
                               made its record (read over the record's own); expires with it
    r:<id>             hash    relations: child:<id> and retried_as:<id> -> when, retry_of -> id
    idx                zset    every task id, score = first seen (unix seconds)
    s:<STATE>          zset    ids in that state, same score
    n:<STATE>:<name>   zset    ids of that task name in that state, same score
    nkeys              set     the n:* keys that exist (for counts and trimming)
    workers            hash    hostname -> WorkerEntry as JSON
    meta               hash    recorder stats;  `lock` is the recorder's lock

Retention: after each batch, when `idx` holds more than max_tasks (plus 1 % slack) or its
oldest entry is older than max_age_s, every index is cut at one score and the records go.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery.states import precedence
from pydantic import BaseModel, ConfigDict
from redis.exceptions import NoScriptError
from redis.lock import Lock

from celery_mcp.models.common import NOT_RUN, READY_STATES, Json, TaskState
from celery_mcp.stores.keys import HISTORY_PREFIX
from celery_mcp.task_failures import exception_text

#: States an event can put a record in (the indexes `s:<STATE>` that may exist).
#: The states the history indexes by: Celery's, and NOT_RUN for chain steps after a failure.
STATES: tuple[str, ...] = (*(s.value for s in TaskState), NOT_RUN)
#: One new record and its indexes, written only when the record does not exist yet (the
#: recorder reads, merges and writes, so a record made in between must not be overwritten:
#: it reads again). KEYS: record, time index, state index, [name index, the set of name
#: indexes], [parent's relations], [exact-args key]; ARGV: record JSON, TTL seconds, first-seen
#: score, task id, "1" when a name index is given, the parent's child field or "", the exact
#: args JSON or "" (a note of a sent task: kept in the exact-args key when the record exists).
CREATE_LUA = """
local n = 4
if ARGV[5] == '1' then n = 6 end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[7] ~= '' then redis.call('SET', KEYS[#KEYS], ARGV[7], 'EX', ARGV[2]) end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
  redis.call('SADD', KEYS[5], KEYS[4])
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[n], ARGV[6], ARGV[3])
  redis.call('EXPIRE', KEYS[n], ARGV[2])
end
return 1
"""
CREATE_SHA = hashlib.sha1(CREATE_LUA.encode()).hexdigest()  # noqa: S324 (Redis's id)
#: Rounds of "read, merge, create where none is" before a batch gives up (each lost race
#: means a note landed in between; a second is not expected).
CREATE_ATTEMPTS = 4
#: How many recent failures are compared when telling whether a failure was copied from one.
UPSTREAM_SCAN = 100
#: The failed step's task-failed event is sent after Celery stored the failure of the steps
#: after it: its time may be a little later than theirs.
UPSTREAM_SLACK_S = 2.0
EVENT_STATES = {
    "task-sent": "PENDING",
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}
#: Event fields kept per event kind: record field -> event field.
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "sent": {
        "name": "name",
        "args": "args",
        "kwargs": "kwargs",
        "retries": "retries",
        "eta": "eta",
        "expires": "expires",
        "queue": "queue",
        "parent": "parent_id",
        "root": "root_id",
    },
    "received": {
        "name": "name",
        "args": "args",
        "kwargs": "kwargs",
        "retries": "retries",
        "eta": "eta",
        "expires": "expires",
        "parent": "parent_id",
        "root": "root_id",
        "worker": "hostname",
    },
    "started": {"worker": "hostname"},
    "succeeded": {"result": "result", "runtime": "runtime", "worker": "hostname"},
    "failed": {"exception": "exception", "traceback": "traceback", "worker": "hostname"},
    "retried": {"exception": "exception", "traceback": "traceback", "worker": "hostname"},
    "revoked": {"terminated": "terminated", "expired": "expired", "signum": "signum"},
    "rejected": {"requeue": "requeue"},
}
TAIL_FIELDS = ("traceback",)  # capped from the end: tracebacks end with the error
#: Backend state -> the record field holding when the task got there.
FINISH_KIND = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked"}
FINISH_FIELDS = ("succeeded", "failed", "revoked", "rejected")
TRIM_CHUNK = 2_000
WORKER_FORGET_S = 86_400.0
#: Fields of a task's relations hash `r:<id>`: a child (the parent's id is the hash's), a re-run
#: of it (value: when it was sent) and, on a re-run, the task it re-runs (value: that task's id).
CHILD_FIELD = "child:"
RETRIED_AS_FIELD = "retried_as:"
RETRY_OF_FIELD = "retry_of"


def history_prefix(state_prefix: str = "") -> str:
    """The history's key prefix in a state store whose own keys start with `state_prefix`
    (a user's `global_keyprefix`)."""
    return state_prefix + HISTORY_PREFIX


@dataclass(frozen=True)
class Relations:
    """A task's links in the history: the children seen with it as parent, its re-runs (oldest
    first) and the task it re-runs."""

    children: list[str]
    retried_as: list[str]
    retry_of: str | None

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Relations:
        """Read a relations hash as `HistoryStore` writes it."""
        retried = [
            (k.removeprefix(RETRIED_AS_FIELD), float(v))
            for k, v in fields.items()
            if k.startswith(RETRIED_AS_FIELD)
        ]
        return cls(
            children=[k.removeprefix(CHILD_FIELD) for k in fields if k.startswith(CHILD_FIELD)],
            retried_as=[tid for tid, _ in sorted(retried, key=lambda item: item[1])],
            retry_of=fields.get(RETRY_OF_FIELD),
        )

    def __bool__(self) -> bool:
        return bool(self.children or self.retried_as or self.retry_of)


class TaskRecord(BaseModel):
    """What the history knows about one task (fields it does not know are ignored)."""

    id: str = ""  # the key holds it; not repeated in the stored JSON
    state: str | None = None  # a Celery state; set on every stored record
    first: float = 0.0  # first seen, unix seconds (the index score); 0 until an event is merged
    name: str | None = None
    args: Json = None  # a JSON list when `exact`, else the worker's repr text
    kwargs: Json = None
    exact: bool = False  # args/kwargs are exact (from the result backend, or sent here)
    retries: int | None = None
    eta: str | None = None
    expires: str | None = None
    queue: str | None = None
    worker: str | None = None
    parent: str | None = None
    root: str | None = None
    # when each event happened (unix seconds)
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    retried: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    result: Json = None
    runtime: float | None = None
    exception: str | None = None
    traceback: str | None = None
    terminated: bool | None = None
    expired: bool | None = None
    signum: Json = None
    requeue: bool | None = None
    deliveries: int = 0  # task-received events (retries included)
    backfilled: bool = False  # built from the result backend, without a timeline
    #: NOT_RUN: the failed chain step whose failure Celery stored under this id too
    blocked_by: str | None = None
    #: where exact args/kwargs came from: "sent" (noted when this project sent the task),
    #: "backend" (result_extended), "repr" (the worker's repr, parsed); None: not exact
    args_source: str | None = None

    @property
    def finished(self) -> float | None:
        """When it succeeded, failed, was revoked or rejected (the latest), if it did."""
        times = [t for t in (getattr(self, k) for k in FINISH_FIELDS) if t is not None]
        return float(max(times)) if times else None

    @property
    def run_time_s(self) -> float | None:
        """Run time: the worker's own figure, else started -> finished."""
        if self.runtime is not None:
            return float(self.runtime)
        finished = self.finished
        if self.started and finished and finished >= self.started:
            return round(finished - self.started, 6)
        return None

    def to_json(self) -> str:
        return self.model_dump_json(exclude={"id"}, exclude_defaults=True)

    @classmethod
    def from_json(cls, task_id: str, raw: str | bytes) -> TaskRecord:
        rec = cls.model_validate_json(raw)
        rec.id = task_id
        return rec


@dataclass(frozen=True)
class SentTask:
    """A task this project is about to publish, as the history notes it."""

    task_id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None = None


class WorkerEntry(BaseModel):
    """A worker's last known state, from its worker-* events."""

    model_config = ConfigDict(extra="ignore")

    status: str = "online"  # online | offline
    ts: float = 0.0  # last event, unix seconds
    freq: float = 2.0  # heartbeat interval the worker announced
    active: int | None = None
    processed: int | None = None


def cap_value(value: Any, limit: int, *, tail: bool = False) -> Any:
    """`value` if its text fits `limit` characters, else its text cut to `limit` (marked)."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    if len(text) <= limit:
        return value
    return "…" + text[-limit:] if tail else text[:limit] + "…"


def apply_event(rec: TaskRecord, event: dict[str, Any], cap: int) -> TaskRecord:
    """Merge one task event into a record, the way Celery's own event state does.

    An event whose state logically happens before the current one (a late task-sent after
    task-started, say) only fills fields still missing; any other event sets the state.
    """
    state = EVENT_STATES[event["type"]]
    kind = event["type"][len("task-") :]
    ts = float(event.get("timestamp") or time.time())
    if not rec.id:
        rec.id = str(event["uuid"])
    setattr(rec, kind, ts)
    rec.deliveries += kind == "received"
    rec.first = min(rec.first, ts) if rec.first else ts
    fields = {
        key: _typed(key, cap_value(_readable(key, event[src]), cap, tail=key in TAIL_FIELDS))
        for key, src in EVENT_FIELDS[kind].items()
        if event.get(src) is not None
    }
    if kind == "sent" and "queue" not in fields and event.get("routing_key"):
        fields["queue"] = str(event["routing_key"])
    if rec.exact:  # args known exactly: keep them
        fields.pop("args", None)
        fields.pop("kwargs", None)
    current = rec.state
    happened_before = (
        current is not None
        and "RETRY" not in (state, current)
        and precedence(state) > precedence(current)
    )
    for key, value in fields.items():
        if not happened_before or getattr(rec, key) is None:
            setattr(rec, key, value)
    if happened_before:
        return rec
    rec.state = state
    if state == "SUCCESS":
        rec.exception = None
        rec.traceback = None
    return rec


def _readable(key: str, value: Any) -> Any:
    """An event's exception (its repr) as 'Type: message', the way every tool writes it."""
    return exception_text(value) if key == "exception" else value


def _typed(key: str, value: Any) -> Any:
    """A capped event value in the type of its record field (a cut value becomes text)."""
    if key in ("args", "kwargs", "result", "signum"):
        return value
    if key == "retries":
        return value if isinstance(value, int) else None
    if key == "runtime":
        return float(value) if isinstance(value, int | float) else None
    if key in ("terminated", "expired", "requeue"):
        return bool(value)
    return value if value is None else str(value)


def apply_backend_meta(rec: TaskRecord, meta: dict[str, Any], cap: int) -> None:
    """Fill exact args/kwargs, queue and worker from a result-backend meta (result_extended)."""
    args, kwargs = meta.get("args"), meta.get("kwargs")
    fits = len(json.dumps([args, kwargs], default=repr)) <= 2 * cap
    if isinstance(args, list) and isinstance(kwargs, dict) and fits:
        rec.args, rec.kwargs, rec.exact = args, kwargs, True
        rec.args_source = "backend"
    for key in ("queue", "worker", "name"):
        if meta.get(key) and not getattr(rec, key):
            setattr(rec, key, str(meta[key]))


def record_from_meta(rec: TaskRecord, meta: dict[str, Any], cap: int) -> TaskRecord | None:
    """`rec` completed from a finished task's backend meta, or None when there is nothing new.

    Used to backfill tasks that finished while no monitor recorded (their result is kept for
    result_expires): the history then has their end state, args and error, but no timeline.
    """
    state = str(meta.get("status"))
    if state not in FINISH_KIND or rec.state in READY_STATES:
        return None
    try:
        done = datetime.fromisoformat(str(meta["date_done"]))
    except (KeyError, ValueError):
        return None
    ts = (done if done.tzinfo else done.replace(tzinfo=UTC)).timestamp()
    out = rec.model_copy()
    out.state, out.backfilled = state, True
    setattr(out, FINISH_KIND[state], ts)
    out.first = min(out.first, ts) if out.first else ts
    apply_backend_meta(out, meta, cap)
    if isinstance(meta.get("retries"), int):
        out.retries = meta["retries"]
    if meta.get("parent_id") is not None:
        out.parent = str(meta["parent_id"])
    result = meta.get("result")
    if state == "SUCCESS":
        out.result = cap_value(result, cap)
    elif isinstance(result, dict) and "exc_type" in result:
        out.exception = str(cap_value(exception_text(result), cap))
    if meta.get("traceback"):
        out.traceback = str(cap_value(meta["traceback"], cap, tail=True))
    return out


def mark_not_run(rec: TaskRecord, upstream: str) -> None:
    """Record `rec` as a chain step that never ran because `upstream` failed."""
    rec.state, rec.blocked_by = NOT_RUN, upstream
    rec.exception = rec.traceback = None


def _ran(rec: TaskRecord) -> bool:
    """True when a worker was seen with the task (an event, or result_extended's worker)."""
    return bool(rec.received or rec.started or rec.worker)


def _same_traceback(a: str | None, b: str | None) -> bool:
    """Equal tracebacks, either possibly capped from its start ('…' + its end)."""
    if not a or not b:
        return False
    a, b = a.removeprefix("…"), b.removeprefix("…")
    return a.endswith(b) or b.endswith(a)


def worker_entry(event: dict[str, Any]) -> WorkerEntry:
    """The stored state of a worker after one worker-* event."""
    kind = event["type"][len("worker-") :]
    active, processed = event.get("active"), event.get("processed")
    return WorkerEntry(
        status="offline" if kind == "offline" else "online",
        ts=float(event.get("timestamp") or time.time()),
        freq=float(event.get("freq") or 2.0),
        active=active if isinstance(active, int) else None,
        processed=processed if isinstance(processed, int) else None,
    )


def _with_noted(rec: TaskRecord, noted: str | bytes | None) -> TaskRecord:
    """`rec` with the exact arguments a note kept beside it (`a:<id>`), unless it has some."""
    if noted and not rec.exact:
        args, kwargs = json.loads(noted)
        rec.args, rec.kwargs, rec.exact, rec.args_source = args, kwargs, True, "sent"
    return rec


def _bound(score: float) -> str:
    """A zset score bound as Redis spells it (+inf/-inf for open ends)."""
    if math.isinf(score):
        return "+inf" if score > 0 else "-inf"
    return repr(score)


class PendingNote:
    """A note of sent tasks whose writes went out and whose replies are still to be read."""

    def __init__(self, store: HistoryStore, conn: Any, writes: list[tuple[Any, ...]]) -> None:
        self.store, self.conn, self.writes = store, conn, writes

    def finish(self) -> None:
        """Read the replies (a missing script is loaded and the note written again)."""
        pool, unloaded = self.store.r.connection_pool, False
        try:
            for _ in self.writes:
                try:
                    self.conn.read_response()
                except NoScriptError:  # a fresh server (or SCRIPT FLUSH)
                    unloaded = True
        except BaseException:
            self.conn.disconnect()  # replies may be left unread on it
            raise
        finally:
            pool.release(self.conn)
        if unloaded:  # load it, once, and write again (a record written meanwhile is kept)
            self.store.r.script_load(CREATE_LUA)
            pipe = self.store.r.pipeline(transaction=False)
            for write in self.writes:
                pipe.evalsha(*write[1:])
            pipe.execute()

    def abandon(self) -> None:
        """Leave the replies unread (the server is not answering): the connection goes."""
        self.conn.disconnect()
        self.store.r.connection_pool.release(self.conn)


class HistoryStore:
    """The task history in Redis: the recorder's write path and the readers' queries."""

    def __init__(
        self,
        client: Any,
        *,
        max_tasks: int,
        max_age_s: float,
        field_bytes: int,
        prefix: str = HISTORY_PREFIX,
    ) -> None:
        self.r = client
        self.max_tasks = max_tasks
        self.max_age_s = max_age_s
        self.cap = field_bytes
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def ttl_s(self) -> int:
        return int(self.max_age_s) + 60

    # ---- write path -------------------------------------------------------------------------

    def record(
        self,
        events: Iterable[dict[str, Any]],
        *,
        enrich: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None,
        trim: bool = True,
    ) -> int:
        """Write a batch of Celery events (one read and one pipelined write); return tasks."""
        tasks: dict[str, list[dict[str, Any]]] = {}
        workers: dict[str, str] = {}
        count = 0
        for event in events:
            count += 1
            kind = str(event.get("type", ""))
            if kind in EVENT_STATES and event.get("uuid"):
                tasks.setdefault(str(event["uuid"]), []).append(event)
            elif kind.startswith("worker-") and event.get("hostname"):
                workers[str(event["hostname"])] = worker_entry(event).model_dump_json()
        ids = list(tasks)

        def merged(tid: str, old: TaskRecord | None) -> TaskRecord:
            rec = old.model_copy() if old else TaskRecord(id=tid)
            for event in tasks[tid]:
                apply_event(rec, event, self.cap)
            return rec

        def merged_again(tid: str, now: TaskRecord | None) -> TaskRecord:
            rec = merged(tid, now)
            if enrich is not None:
                self._enrich([rec], enrich)
            return rec

        olds = self.get_many(ids)
        updated = [(old, merged(tid, old)) for tid, old in zip(ids, olds, strict=True)]
        if enrich is not None:  # one backend read for the batch
            self._enrich([rec for _, rec in updated], enrich)
        pipe = self.r.pipeline(transaction=False)
        if workers:
            pipe.hset(self.key("workers"), mapping=workers)
        if count:
            pipe.hincrby(self.key("meta"), "events", count)
            pipe.hset(self.key("meta"), "last_event", time.time())
        self._write_merged(pipe, updated, merged_again)
        if trim:
            self.maybe_trim()
        return len(ids)

    def _enrich(
        self, recs: list[TaskRecord], lookup: Callable[[list[str]], dict[str, dict[str, Any]]]
    ) -> None:
        wanted = [r for r in recs if r.state in READY_STATES and not r.exact]
        if not wanted:
            return
        try:
            metas = lookup([r.id for r in wanted])
        except Exception:  # the backend is a bonus here; never lose events for it
            return
        for rec in wanted:
            if rec.id in metas:
                apply_backend_meta(rec, metas[rec.id], self.cap)

    def _write_merged(
        self,
        pipe: Any,
        updated: list[tuple[TaskRecord | None, TaskRecord]],
        again: Callable[[str, TaskRecord | None], TaskRecord | None],
    ) -> None:
        """Write records merged from what was read (`old`, None: no record) and execute `pipe`.

        A new record is created only if none exists by then: a note of a task sent here can
        land between the read and the write (it is written after the publish when the caller
        waits for the result). Such records are read again and merged by `again` (None: nothing
        to write), so neither the note nor the merge is lost and the indexes stay exact."""
        for _ in range(CREATE_ATTEMPTS):
            created: list[tuple[int, str]] = []
            for old, rec in updated:
                if old is None:
                    created.append((len(pipe), rec.id))
                    pipe.evalsha(CREATE_SHA, *self._create_call(rec))
                else:
                    self._write(pipe, old, rec)
            replies = pipe.execute(raise_on_error=False)
            if any(isinstance(r, NoScriptError) for r in replies):  # a fresh server: load it
                self.r.script_load(CREATE_LUA)
            redo = [tid for at, tid in created if replies[at] != 1]
            failed = [r for r in replies if isinstance(r, Exception)]
            if failed and not all(isinstance(r, NoScriptError) for r in failed):
                raise failed[0]
            if not redo:
                return
            updated = []
            for tid, now in zip(redo, self.get_many(redo), strict=True):
                merged = again(tid, now)
                if merged is not None:
                    updated.append((now, merged))
            pipe = self.r.pipeline(transaction=False)
        raise RuntimeError(f"history records kept changing while written: {len(updated)}")

    def _create_call(self, rec: TaskRecord, exact: str = "") -> tuple[Any, ...]:
        """CREATE_LUA's key count, keys and arguments for the new record `rec` (and the exact
        arguments JSON of a note, kept aside when the record exists)."""
        tid, state = rec.id, rec.state or "PENDING"
        keys = [self.key("t", tid), self.key("idx"), self.key("s", state)]
        if rec.name:
            keys += [self.key("n", state, rec.name), self.key("nkeys")]
        if rec.parent:
            keys.append(self.key("r", rec.parent))
        if exact:
            keys.append(self.key("a", tid))
        args = (
            rec.to_json(),
            self.ttl_s,
            rec.first,
            tid,
            "1" if rec.name else "0",
            CHILD_FIELD + tid if rec.parent else "",
            exact,
        )
        return (len(keys), *keys, *args)

    def _write(self, pipe: Any, old: TaskRecord, rec: TaskRecord) -> None:
        """An existing record's update and its index moves."""
        tid, first = rec.id, rec.first
        pipe.set(self.key("t", tid), rec.to_json(), ex=self.ttl_s)
        if (old.name, old.state, old.first) == (rec.name, rec.state, first):
            return
        pipe.zadd(self.key("idx"), {tid: first})
        if old.state:
            pipe.zrem(self.key("s", old.state), tid)
            if old.name:
                pipe.zrem(self.key("n", old.state, old.name), tid)
        state = rec.state or "PENDING"
        pipe.zadd(self.key("s", state), {tid: first})
        if rec.name:
            nkey = self.key("n", state, rec.name)
            pipe.zadd(nkey, {tid: first})
            pipe.sadd(self.key("nkeys"), nkey)
        if rec.parent and not old.parent:
            rel = self.key("r", rec.parent)
            pipe.hset(rel, CHILD_FIELD + tid, first)
            pipe.expire(rel, self.ttl_s)

    def backfill(self, metas: dict[str, dict[str, Any]]) -> int:
        """Record finished tasks from backend metas unless the history already has their end."""
        ids = list(metas)
        built: list[tuple[TaskRecord | None, TaskRecord]] = []
        for tid, old in zip(ids, self.get_many(ids), strict=True):
            rec = record_from_meta(old or TaskRecord(id=tid), metas[tid], self.cap)
            if rec is not None:
                built.append((old, rec))
        new = [rec for _, rec in built]
        for rec in new:
            upstream = self.failed_upstream(rec, among=new)
            if upstream is not None:
                mark_not_run(rec, upstream)
        self._write_merged(
            self.r.pipeline(transaction=False),
            built,
            lambda tid, now: record_from_meta(now or TaskRecord(id=tid), metas[tid], self.cap),
        )
        return len(built)

    def failed_upstream(self, rec: TaskRecord, among: Iterable[TaskRecord] = ()) -> str | None:
        """The failed task whose failure Celery copied onto `rec`, when `rec` is a chain step
        that never ran; else None.

        When a chain step fails, Celery stores the same failure (same traceback, within
        milliseconds) under the ids of the steps after it, which never run. So a failure no
        worker was seen with, whose traceback is that of another failure stored at nearly the
        same time, is one of those, unless it is the first stored; the other failure is among
        the newest UPSTREAM_SCAN failures (or `among`, records not yet stored).
        """
        if rec.state != "FAILURE" or not rec.traceback or _ran(rec):
            return None
        finished = rec.finished or math.inf
        ids = self.r.zrevrangebyscore(
            self.key("s", "FAILURE"), _bound(finished), "-inf", start=0, num=UPSTREAM_SCAN
        )
        candidates = [*among, *(r for r in self.get_many(list(ids)) if r is not None)]
        group = [
            c
            for c in candidates
            if c.id != rec.id
            and c.state == "FAILURE"
            and abs((c.finished or 0) - finished) <= UPSTREAM_SLACK_S
            and _same_traceback(c.traceback, rec.traceback)
        ]
        if not group:
            return None
        # the one that ran (seen by a worker), else the first stored: Celery stores the failed
        # step's failure before the copies
        first = min([*group, rec], key=lambda c: (not _ran(c), c.finished or math.inf))
        return None if first is rec else first.id

    def note_sent(self, sent: list[SentTask], *, at: float) -> None:
        """Record tasks sent from here, with their exact arguments (if not known yet).

        A record that exists already keeps what it says (the recorder made it from the task's
        events, or it is a re-send under the same id); the exact arguments then go beside it
        (`a:<id>`) and are read over its own. So a note may be written before or after the
        publish: the recorder, which merges the task's events into the record, never loses it
        (it creates a record only where none is, and merges again when it lost that race)."""
        self.begin_note_sent(sent, at=at).finish()

    def begin_note_sent(self, sent: list[SentTask], *, at: float) -> PendingNote:
        """`note_sent`, in two halves: its writes go out now, and `PendingNote.finish` reads
        their replies. What runs in between (the publish, or the wait for the result) overlaps
        the note's round trip."""
        writes = [("EVALSHA", *self._note_write(task, at)) for task in sent]
        pool = self.r.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(writes))
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return PendingNote(self, conn, writes)

    def _note_write(self, task: SentTask, at: float) -> tuple[Any, ...]:
        """CREATE_LUA's call for a note of `task`: a PENDING record with its exact arguments
        (when they fit the field cap), else those arguments beside the existing record."""
        fits = len(exact := json.dumps([task.args, task.kwargs], default=repr)) <= 2 * self.cap
        rec = TaskRecord(
            id=task.task_id,
            state="PENDING",
            first=at,
            sent=at,
            name=task.name,
            queue=task.queue,
            args=task.args if fits else None,
            kwargs=task.kwargs if fits else None,
            exact=fits,
            args_source="sent" if fits else None,
        )
        return (CREATE_SHA, *self._create_call(rec, exact if fits else ""))

    def forget(self, sent: list[SentTask]) -> None:
        """Drop the notes of tasks whose publish failed."""
        pipe = self.r.pipeline(transaction=False)
        for task in sent:
            pipe.delete(self.key("t", task.task_id), self.key("a", task.task_id))
            pipe.zrem(self.key("idx"), task.task_id)
            pipe.zrem(self.key("s", "PENDING"), task.task_id)
            pipe.zrem(self.key("n", "PENDING", task.name), task.task_id)
        pipe.execute()

    def link_retry(self, original: str, new: str) -> None:
        """Record that `new` re-runs `original` (both directions)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.key("r", original), RETRIED_AS_FIELD + new, time.time())
        pipe.hset(self.key("r", new), RETRY_OF_FIELD, original)
        pipe.expire(self.key("r", original), self.ttl_s)
        pipe.expire(self.key("r", new), self.ttl_s)
        pipe.execute()

    def recorder_lock(self, timeout_s: float) -> Lock:
        """The lock one recorder holds while it writes (taken without blocking)."""
        return Lock(self.r, self.key("lock"), timeout=timeout_s, blocking=False, thread_local=False)

    def mark_recording(self, mapping: dict[str, Any]) -> None:
        """Note who records (host, pid, since) in the meta hash."""
        self.r.hset(self.key("meta"), mapping=mapping)

    def last_event_at(self) -> float | None:
        raw = self.r.hget(self.key("meta"), "last_event")
        return float(raw) if raw else None

    def note_dropped(self, dropped: int) -> None:
        self.r.hset(self.key("meta"), "dropped", dropped)

    # ---- retention --------------------------------------------------------------------------

    def maybe_trim(self, now: float | None = None) -> int:
        """Apply the count and age caps when they are exceeded; return tasks removed."""
        now = time.time() if now is None else now
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(self.key("idx"))
        pipe.zrange(self.key("idx"), 0, 0, withscores=True)
        card, oldest = pipe.execute()
        age_cut = now - self.max_age_s
        slack = max(100, self.max_tasks // 100)
        cut: float | None = None
        if card > self.max_tasks + slack:
            excess = card - self.max_tasks
            row = self.r.zrange(self.key("idx"), excess - 1, excess - 1, withscores=True)
            cut = float(row[0][1]) if row else None
        if oldest and float(oldest[0][1]) < age_cut:
            cut = max(cut if cut is not None else -math.inf, math.nextafter(age_cut, -math.inf))
        return self.remove_upto(cut) if cut is not None else 0

    def remove_upto(self, score: float) -> int:
        """Delete every task first seen at or before `score`, from records and every index."""
        removed = 0
        idx = self.key("idx")
        while True:
            ids = self.r.zrangebyscore(idx, "-inf", score, start=0, num=TRIM_CHUNK)
            if not ids:
                break
            pipe = self.r.pipeline(transaction=False)
            pipe.unlink(*[self.key(kind, i) for kind in ("t", "r", "a") for i in ids])
            pipe.zrem(idx, *ids)
            pipe.execute()
            removed += len(ids)
        nkeys = sorted(self.r.smembers(self.key("nkeys")))
        pipe = self.r.pipeline(transaction=False)
        for key in [self.key("s", s) for s in STATES] + nkeys:
            pipe.zremrangebyscore(key, "-inf", score)
        for key in nkeys:
            pipe.zcard(key)
        cards = pipe.execute()[-len(nkeys) :] if nkeys else []
        empty = [k for k, c in zip(nkeys, cards, strict=True) if not c]
        if empty:
            self.r.srem(self.key("nkeys"), *empty)
        self._forget_workers()
        return removed

    def _forget_workers(self) -> None:
        now = time.time()
        stale = [host for host, w in self.workers().items() if now - w.ts > WORKER_FORGET_S]
        if stale:
            self.r.hdel(self.key("workers"), *stale)

    # ---- read path --------------------------------------------------------------------------

    def get_many(self, ids: list[str]) -> list[TaskRecord | None]:
        """Records of `ids` (None where unknown), one round trip."""
        if not ids:
            return []
        raw = self.r.mget([self.key(kind, i) for kind in ("t", "a") for i in ids])
        return [
            _with_noted(TaskRecord.from_json(i, v), noted) if v else None
            for i, v, noted in zip(ids, raw[: len(ids)], raw[len(ids) :], strict=True)
        ]

    def get(self, task_id: str) -> TaskRecord | None:
        return self.get_many([task_id])[0]

    def relations(self, task_id: str) -> Relations:
        """The task's children, re-runs and original, as recorded."""
        return Relations.from_fields(dict(self.r.hgetall(self.key("r", task_id))))

    def name_keys(self) -> list[tuple[str, str, str]]:
        """(key, state, name) of every n:* index."""
        out = []
        for key in self.r.smembers(self.key("nkeys")):
            _, state, name = key[len(self.prefix) :].split(":", 2)
            out.append((key, state, name))
        return sorted(out)

    def state_key(self, state: str, name: str | None = None) -> str:
        """The index of one state (and task name)."""
        return self.key("n", state, name) if name else self.key("s", state)

    def newest(
        self, state: str, name: str, limit: int, since: float = -math.inf
    ) -> list[TaskRecord]:
        """The newest `limit` records of one task name in one state, first seen since `since`."""
        ids = self.r.zrevrangebyscore(
            self.state_key(state, name), "+inf", _bound(since), start=0, num=limit
        )
        return [r for r in self.get_many(list(ids)) if r is not None]

    def iter_desc(
        self, key: str, hi: float, lo: float, after: tuple[float, str] | None, batch: int = 256
    ) -> Iterator[tuple[float, str]]:
        """(score, id) of one index, newest first, strictly after `after`, within [lo, hi].

        Reads `batch` entries first and doubles each read, so a short page costs one small read.
        """
        top = after[0] if after else hi
        offset = 0
        while True:
            rows = self.r.zrevrangebyscore(
                key, _bound(top), _bound(lo), start=offset, num=batch, withscores=True
            )
            for member, score in rows:
                if after and (score > after[0] or (score == after[0] and member >= after[1])):
                    continue
                yield float(score), member
            if len(rows) < batch:
                return
            last = float(rows[-1][1])
            same = sum(1 for _, s in rows if float(s) == last)
            if top == last:
                offset += same
            else:
                top, offset = last, same
            batch = min(batch * 2, 2_048)  # small first reads, larger once a scan goes deep

    def count(self, keys: list[tuple[str, str]], lo: float, hi: float) -> dict[str, int]:
        """Members per state of (key, state) indexes within [lo, hi]."""
        counts: dict[str, int] = {}
        for (_, state), n in zip(keys, self.count_each([k for k, _ in keys], lo, hi), strict=True):
            if n:
                counts[state] = counts.get(state, 0) + n
        return counts

    def count_each(self, keys: list[str], lo: float, hi: float = math.inf) -> list[int]:
        """Members of each index within [lo, hi], in order (one round trip)."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(key, _bound(lo), _bound(hi))
        return [int(n) for n in pipe.execute()]

    def recent_ids(self, limit: int) -> list[str]:
        """Ids of the newest `limit` tasks, newest first."""
        return [str(i) for i in self.r.zrevrange(self.key("idx"), 0, limit - 1)]

    def recent_queues(self, limit: int) -> set[str]:
        """Queues the newest `limit` tasks went to."""
        ids = self.r.zrevrange(self.key("idx"), 0, limit - 1)
        return {r.queue for r in self.get_many(list(ids)) if r is not None and r.queue}

    def workers(self) -> dict[str, WorkerEntry]:
        return {
            h: WorkerEntry.model_validate_json(v)
            for h, v in self.r.hgetall(self.key("workers")).items()
        }

    def status(self) -> dict[str, Any]:
        """Recorder lock holder, last event time and the number of tasks kept."""
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(self.key("lock"))
        pipe.hgetall(self.key("meta"))
        pipe.zcard(self.key("idx"))
        locked, meta, card = pipe.execute()
        return {"recording": bool(locked), "meta": meta, "tasks": int(card)}
