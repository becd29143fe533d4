"""`celery-mcp monitor`: records Celery events into a bounded task history in Redis/Valkey.

Why a monitor process. Celery events are Redis PUBLISHes that nobody stores, so something must
listen while tasks run. The MCP server is the wrong listener: a stdio server lives only as long
as one client session. Worker signals would cover only `celery-mcp worker` processes and add a
write to every task. A small monitor sees every worker that emits events (it broadcasts
`enable_events` every minute for workers started without -E), runs while no MCP server does,
and holds a Redis lock, so any number can be started (`serve --with-worker`,
`worker --monitor`, a service unit): one records, the others stand by and take over within
LOCK_TTL_S of its death.

Layout under `celery-mcp:history:` in the broker's Redis db (the result backend's when the
broker is not Redis):

    t:<id>             string  the task's JSON record (fields capped); expires after max age
    r:<id>             hash    relations: child:<id>, retried_as:<id>, retry_of
    idx                zset    every task id, score = first seen (unix seconds)
    s:<STATE>          zset    ids in that state, same score
    n:<STATE>:<name>   zset    ids of that task name in that state, same score
    nkeys              set     the n:* keys that exist (for counts and trimming)
    workers            hash    hostname -> JSON {status, heartbeat, freq, active, processed}
    meta               hash    recorder stats;  `lock` is the recorder's lock

Retention: after each batch, when `idx` holds more than max_tasks (plus 1 % slack) or its
oldest entry is older than max_age_s, every index is cut at one score and the records go.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from celery.states import precedence

from celery_mcp.config import Settings
from celery_mcp.errors import Unavailable
from celery_mcp.models.common import TaskState

log = logging.getLogger("celery_mcp.monitor")

PREFIX = "celery-mcp:history:"
STATES: tuple[str, ...] = tuple(s.value for s in TaskState)
READY = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")
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
#: Event fields kept per event kind: record key -> event key.
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
LOCK_TTL_S = 10.0
TRIM_CHUNK = 2_000
WORKER_FORGET_S = 86_400.0
BACKFILL_BUDGET_S = 60.0


def cap_value(value: Any, limit: int, *, tail: bool = False) -> Any:
    """`value` if its text fits `limit` characters, else its text cut to `limit` (marked)."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    if len(text) <= limit:
        return value
    return "…" + text[-limit:] if tail else text[:limit] + "…"


def apply_event(rec: dict[str, Any], event: dict[str, Any], cap: int) -> dict[str, Any]:
    """Merge one task event into a task record, the way Celery's own event state does.

    An event whose state logically happens before the current one (a late task-sent after
    task-started, say) only fills fields still missing; any other event sets the state.
    """
    state = EVENT_STATES[event["type"]]
    kind = event["type"][len("task-") :]
    ts = float(event.get("timestamp") or time.time())
    rec.setdefault("id", event["uuid"])
    rec[kind] = ts
    rec["first"] = min(float(rec.get("first", ts)), ts)
    fields = {
        key: cap_value(event[src], cap, tail=key in TAIL_FIELDS)
        for key, src in EVENT_FIELDS[kind].items()
        if event.get(src) is not None
    }
    if kind == "sent" and "queue" not in fields and event.get("routing_key"):
        fields["queue"] = event["routing_key"]
    if rec.get("exact"):  # args known exactly from the backend: keep them
        fields.pop("args", None)
        fields.pop("kwargs", None)
    current = rec.get("state")
    happened_before = (
        current is not None
        and "RETRY" not in (state, current)
        and precedence(state) > precedence(current)
    )
    if happened_before:
        for key, value in fields.items():
            rec.setdefault(key, value)
        return rec
    rec.update(fields)
    rec["state"] = state
    if state == "SUCCESS":
        rec.pop("exception", None)
        rec.pop("traceback", None)
    return rec


def apply_backend_meta(rec: dict[str, Any], meta: dict[str, Any], cap: int) -> None:
    """Fill exact args/kwargs, queue and worker from a result-backend meta (result_extended)."""
    args, kwargs = meta.get("args"), meta.get("kwargs")
    if isinstance(args, list) and isinstance(kwargs, dict):
        fits = len(json.dumps([args, kwargs], default=repr)) <= 2 * cap
        if fits:
            rec.update(args=args, kwargs=kwargs, exact=True)
    for key in ("queue", "worker"):
        if meta.get(key) and not rec.get(key):
            rec[key] = meta[key]
    if meta.get("name") and not rec.get("name"):
        rec["name"] = meta["name"]


FINISH_KIND = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked"}


def record_from_meta(rec: dict[str, Any], meta: dict[str, Any], cap: int) -> dict[str, Any] | None:
    """`rec` completed from a finished task's backend meta, or None when there is nothing new.

    Used to backfill tasks that finished while no monitor recorded (their result is kept for
    result_expires): the history then has their end state, args and error, but no timeline.
    """
    state = str(meta.get("status"))
    if state not in FINISH_KIND or rec.get("state") in READY:
        return None
    try:
        done = datetime.fromisoformat(str(meta["date_done"]))
    except (KeyError, ValueError):
        return None
    ts = (done if done.tzinfo else done.replace(tzinfo=UTC)).timestamp()
    out = dict(rec)
    out.update(state=state, backfilled=True)
    out[FINISH_KIND[state]] = ts
    out["first"] = min(float(out.get("first", ts)), ts)
    apply_backend_meta(out, meta, cap)
    for key, src in (("retries", "retries"), ("parent", "parent_id")):
        if meta.get(src) is not None:
            out[key] = meta[src]
    result = meta.get("result")
    if state == "SUCCESS":
        out["result"] = cap_value(result, cap)
    elif isinstance(result, dict) and "exc_type" in result:
        out["exception"] = cap_value(f"{result['exc_type']}: {result.get('exc_message')}", cap)
    if meta.get("traceback"):
        out["traceback"] = cap_value(meta["traceback"], cap, tail=True)
    return out


def worker_entry(event: dict[str, Any]) -> dict[str, Any]:
    """The stored state of a worker after one worker-* event."""
    kind = event["type"][len("worker-") :]
    ts = float(event.get("timestamp") or time.time())
    return {
        "status": "offline" if kind == "offline" else "online",
        "ts": ts,
        "freq": float(event.get("freq") or 2.0),
        "active": event.get("active"),
        "processed": event.get("processed"),
    }


def _iso_ts(text: str) -> float:
    """Unix time of an ISO 8601 string (UTC when it has no offset); -inf when unreadable."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return -math.inf
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _bound(score: float) -> str:
    """A zset score bound as Redis spells it (+inf/-inf for open ends)."""
    if math.isinf(score):
        return "+inf" if score > 0 else "-inf"
    return repr(score)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=repr)


class HistoryStore:
    """The task history in Redis: the recorder's write path and the readers' queries."""

    def __init__(
        self,
        client: Any,
        *,
        max_tasks: int,
        max_age_s: float,
        field_bytes: int,
        prefix: str = PREFIX,
    ) -> None:
        self.r = client
        self.max_tasks = max_tasks
        self.max_age_s = max_age_s
        self.cap = field_bytes
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

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
                workers[str(event["hostname"])] = _dumps(worker_entry(event))
        ids = list(tasks)
        olds = self.get_many(ids)
        updated: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for tid, old in zip(ids, olds, strict=True):
            rec = dict(old or {})
            for event in tasks[tid]:
                apply_event(rec, event, self.cap)
            updated.append((old or {}, rec))
        if enrich is not None:
            self._enrich([rec for _, rec in updated], enrich)
        pipe = self.r.pipeline(transaction=False)
        for old, rec in updated:
            self._write(pipe, old, rec)
        if workers:
            pipe.hset(self.key("workers"), mapping=workers)
        if count:
            pipe.hincrby(self.key("meta"), "events", count)
            pipe.hset(self.key("meta"), "last_event", time.time())
        pipe.execute()
        if trim:
            self.maybe_trim()
        return len(ids)

    def _enrich(
        self, recs: list[dict[str, Any]], lookup: Callable[[list[str]], dict[str, dict[str, Any]]]
    ) -> None:
        wanted = [r for r in recs if r.get("state") in READY and not r.get("exact")]
        if not wanted:
            return
        try:
            metas = lookup([r["id"] for r in wanted])
        except Exception:  # the backend is a bonus here; never lose events for it
            log.debug("backend lookup failed", exc_info=True)
            return
        for rec in wanted:
            if rec["id"] in metas:
                apply_backend_meta(rec, metas[rec["id"]], self.cap)

    def _write(self, pipe: Any, old: dict[str, Any], rec: dict[str, Any]) -> None:
        tid, first = rec["id"], rec["first"]
        body = {k: v for k, v in rec.items() if k != "id"}  # the key holds the id
        pipe.set(self.key("t", tid), _dumps(body), ex=int(self.max_age_s) + 60)
        before = (old.get("name"), old.get("state"), old.get("first"))
        if before == (rec.get("name"), rec["state"], first):
            return
        pipe.zadd(self.key("idx"), {tid: first})
        if before[1]:
            pipe.zrem(self.key("s", before[1]), tid)
            if before[0]:
                pipe.zrem(self.key("n", before[1], before[0]), tid)
        pipe.zadd(self.key("s", rec["state"]), {tid: first})
        if rec.get("name"):
            nkey = self.key("n", rec["state"], rec["name"])
            pipe.zadd(nkey, {tid: first})
            pipe.sadd(self.key("nkeys"), nkey)
        if rec.get("parent") and not old.get("parent"):
            rel = self.key("r", rec["parent"])
            pipe.hset(rel, f"child:{tid}", first)
            pipe.expire(rel, int(self.max_age_s) + 60)

    def backfill(self, metas: dict[str, dict[str, Any]]) -> int:
        """Record finished tasks from backend metas unless the history already has their end."""
        ids = list(metas)
        pipe = self.r.pipeline(transaction=False)
        added = 0
        for tid, old in zip(ids, self.get_many(ids), strict=True):
            base = old or {"id": tid}
            rec = record_from_meta(base, metas[tid], self.cap)
            if rec is not None:
                self._write(pipe, old or {}, rec)
                added += 1
        pipe.execute()
        return added

    def link_retry(self, original: str, new: str) -> None:
        """Record that `new` re-runs `original` (both directions)."""
        ttl = int(self.max_age_s) + 60
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.key("r", original), f"retried_as:{new}", time.time())
        pipe.hset(self.key("r", new), "retry_of", original)
        pipe.expire(self.key("r", original), ttl)
        pipe.expire(self.key("r", new), ttl)
        pipe.execute()

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
            pipe.unlink(*[self.key("t", i) for i in ids], *[self.key("r", i) for i in ids])
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
        stale = [
            host
            for host, entry in self.workers().items()
            if time.time() - float(entry.get("ts", 0)) > WORKER_FORGET_S
        ]
        if stale:
            self.r.hdel(self.key("workers"), *stale)

    # ---- read path --------------------------------------------------------------------------

    def get_many(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """Records of `ids` (None where unknown), one round trip."""
        if not ids:
            return []
        raw = self.r.mget([self.key("t", i) for i in ids])
        return [{**json.loads(v), "id": i} if v else None for i, v in zip(ids, raw, strict=True)]

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self.get_many([task_id])[0]

    def relations(self, task_id: str) -> dict[str, str]:
        return dict(self.r.hgetall(self.key("r", task_id)))

    def name_keys(self) -> list[tuple[str, str, str]]:
        """(key, state, name) of every n:* index."""
        out = []
        for key in self.r.smembers(self.key("nkeys")):
            _, state, name = key[len(self.prefix) :].split(":", 2)
            out.append((key, state, name))
        return sorted(out)

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
        pipe = self.r.pipeline(transaction=False)
        for key, _ in keys:
            pipe.zcount(key, _bound(lo), _bound(hi))
        counts: dict[str, int] = {}
        for (_, state), n in zip(keys, pipe.execute(), strict=True):
            if n:
                counts[state] = counts.get(state, 0) + int(n)
        return counts

    def workers(self) -> dict[str, dict[str, Any]]:
        return {h: json.loads(v) for h, v in self.r.hgetall(self.key("workers")).items()}

    def status(self) -> dict[str, Any]:
        """Recorder lock holder, last event time and the number of tasks kept."""
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(self.key("lock"))
        pipe.hgetall(self.key("meta"))
        pipe.zcard(self.key("idx"))
        locked, meta, card = pipe.execute()
        return {"recording": bool(locked), "meta": meta, "tasks": int(card)}


def history_client(settings: Settings, broker_url: str, backend_url: str) -> Any:
    """A bounded, decoding redis client on the broker's db (or the backend's, if not Redis)."""
    import redis

    redis_like = ("redis://", "rediss://", "valkey://", "redis+socket://", "unix://")
    url = next((u for u in (broker_url, backend_url) if u.startswith(redis_like)), None)
    if url is None:
        raise Unavailable(
            "the task history needs a Redis or Valkey broker or result backend",
            hint="set CELERY_MCP_RESULT_BACKEND to a redis:// URL",
        )
    url = url.replace("valkey://", "redis://").replace("redis+socket://", "unix://")
    t = settings.broker_timeout_s
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=t,
        socket_connect_timeout=t,
        retry_on_timeout=False,
        health_check_interval=0,
    )


def store_for(settings: Settings, broker_url: str, backend_url: str) -> HistoryStore:
    """The HistoryStore of these settings."""
    return HistoryStore(
        history_client(settings, broker_url, backend_url),
        max_tasks=settings.history_max_tasks,
        max_age_s=settings.history_max_age_s,
        field_bytes=settings.history_field_bytes,
    )


def backend_lookup(app: Any) -> Callable[[list[str]], dict[str, dict[str, Any]]] | None:
    """Batch reader of result-backend metas (Redis-like backends), or None."""
    backend = app.backend
    client = getattr(backend, "client", None)
    if client is None or not hasattr(client, "mget") or not hasattr(backend, "get_key_for_task"):
        return None

    def lookup(ids: list[str]) -> dict[str, dict[str, Any]]:
        raw = client.mget([backend.get_key_for_task(i) for i in ids])
        return {i: dict(backend.decode(v)) for i, v in zip(ids, raw, strict=True) if v}

    return lookup


class Monitor:
    """The recorder process: capture events, write them in batches, keep the lock, trim."""

    FLUSH_S = 0.25
    MAX_PENDING = 200_000
    ENABLE_EVENTS_EVERY_S = 60.0

    def __init__(self, settings: Settings, *, parent_pid: int | None = None) -> None:
        from redis.lock import Lock

        from celery_mcp.app import make_app
        from celery_mcp.security import json_only

        self.settings = settings
        self.app = make_app(settings, worker=True)  # reconnect forever, like a worker
        json_only(self.app)  # events from a user's pickle-configured app are never unpickled
        self.store = store_for(
            settings, str(self.app.conf.broker_url), str(self.app.conf.result_backend)
        )
        self.lookup = backend_lookup(self.app)
        self.parent_pid = parent_pid
        self.lock = Lock(
            self.store.r,
            self.store.key("lock"),
            timeout=LOCK_TTL_S,
            blocking=False,
            thread_local=False,
        )
        self.pending: deque[dict[str, Any]] = deque()
        self.stopping = threading.Event()
        self.lost = threading.Event()
        self.receiver: Any = None
        self.dropped = 0

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        if self.receiver is not None:
            self.receiver.should_stop = True

    def run(self) -> None:
        """Record until stopped (SIGTERM/SIGINT, or the parent process exits)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        while not self.stopping.is_set():
            try:
                acquired = self.lock.acquire()
            except Exception as exc:
                log.warning("history store unreachable: %s", exc)
                acquired = False
            if acquired:
                log.info("recording task history")
                try:
                    self._record()
                except Exception:  # never die on a broker hiccup: stand by and try again
                    log.warning("recording stopped; retrying", exc_info=True)
                    self.stopping.wait(1.0)
            else:
                self._check_parent()
                self.stopping.wait(1.0)

    def _check_parent(self) -> None:
        if self.parent_pid and os.getppid() != self.parent_pid:
            log.info("parent %s exited; stopping", self.parent_pid)
            self.stop()

    def _on_event(self, event: dict[str, Any]) -> None:
        if len(self.pending) >= self.MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append(event)

    def _record(self) -> None:
        self.lost.clear()
        flusher = threading.Thread(target=self._flush_loop, name="history-flush", daemon=True)
        flusher.start()
        threading.Thread(target=self._backfill, name="history-backfill", daemon=True).start()
        try:
            self.store.r.hset(
                self.store.key("meta"),
                mapping={"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()},
            )
            with self.app.connection_for_read() as conn:
                self.receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
                if self.stopping.is_set() or self.lost.is_set():
                    return
                self.receiver.run(wakeup=True)
        finally:
            self.lost.set()
            flusher.join(timeout=10)
            self.receiver = None
            if self.stopping.is_set():
                self._flush()
            try:
                if self.lock.owned():
                    self.lock.release()
            except Exception:
                log.debug("lock release failed", exc_info=True)

    def _backfill(self) -> None:
        """Add tasks that finished while no monitor recorded, from the result backend."""
        backend = self.app.backend
        client = getattr(backend, "client", None)
        if client is None or not hasattr(backend, "task_keyprefix"):
            return
        try:
            last = self.store.r.hget(self.store.key("meta"), "last_event")
            since = float(last) - 60 if last else time.time() - self.store.max_age_s
            prefix = bytes(backend.task_keyprefix)
            deadline = time.monotonic() + BACKFILL_BUDGET_S
            cursor, added = 0, 0
            while not (self.lost.is_set() or self.stopping.is_set()):
                cursor, keys = client.scan(cursor, match=prefix + b"*", count=1_000)
                metas = {}
                for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
                    meta = dict(backend.decode(raw)) if raw else {}
                    done = str(meta.get("date_done") or "")
                    if done and _iso_ts(done) >= since:
                        metas[key[len(prefix) :].decode()] = meta
                if metas:
                    added += self.store.backfill(metas)
                if not cursor or time.monotonic() > deadline:
                    break
            if added:
                log.info("backfilled %d task(s) from the result backend", added)
        except Exception:
            log.warning("backfill from the result backend failed", exc_info=True)

    def _flush(self) -> None:
        while self.pending:
            batch = [self.pending.popleft() for _ in range(min(len(self.pending), 2_000))]
            try:
                self.store.record(batch, enrich=self.lookup)
                if self.dropped:
                    self.store.r.hset(self.store.key("meta"), "dropped", self.dropped)
            except Exception as exc:
                log.warning("could not write %d events, will retry: %s", len(batch), exc)
                self.pending.extendleft(reversed(batch))
                return

    def _flush_loop(self) -> None:
        from redis.exceptions import LockNotOwnedError  # the redis package: not at server start

        last_renew = last_enable = last_trim = 0.0
        while not self.lost.is_set():
            self.lost.wait(self.FLUSH_S)
            now = time.monotonic()
            self._flush()
            if now - last_renew > LOCK_TTL_S / 4:
                try:
                    self.lock.reacquire()
                    last_renew = now
                except LockNotOwnedError:
                    log.warning("another monitor took the recorder lock; standing by")
                    break
                except Exception as exc:  # a broker hiccup: try again at the next flush
                    log.warning("could not renew the recorder lock: %s", exc)
            if now - last_enable > self.ENABLE_EVENTS_EVERY_S:
                try:
                    self.app.control.enable_events()
                except Exception:
                    log.debug("enable_events broadcast failed", exc_info=True)
                last_enable = now
            if now - last_trim > 30:
                try:
                    self.store.maybe_trim()
                except Exception:
                    log.debug("trim failed", exc_info=True)
                last_trim = now
            self._check_parent()
            if self.stopping.is_set():
                break
        self.lost.set()
        if self.receiver is not None:
            self.receiver.should_stop = True


def run(settings: Settings, *, parent_pid: int | None = None) -> None:
    """Run the recorder in this process until stopped."""
    Monitor(settings, parent_pid=parent_pid).run()
