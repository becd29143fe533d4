"""Schedules: periodic tasks in a RedBeat store (the broker's Valkey/Redis), run by celery-mcp beat.

Entries use celery-redbeat's format, so a stock `celery beat -S redbeat.RedBeatScheduler` on the
same app (and `redbeat_redis_url`) runs them too:

    <prefix><name>          hash: definition (JSON: name, task, args, kwargs, options, schedule,
                            enabled) and meta (JSON: last_run_at, total_run_count), as RedBeat
                            writes them; plus fields RedBeat never reads: `celery_mcp` (created /
                            updated) and `celery_mcp_run` (last run: task id, due time, delay),
                            the latter written by `celery-mcp beat`
    <prefix>:schedule       sorted set: entry key -> next due time (epoch s); -1 = never
    <prefix>:lock           RedBeat's beat lock; <prefix>:celery-mcp:beats  beat heartbeats

The prefix is the app's `redbeat_key_prefix` (default `redbeat:`). Schedule kinds: every N
seconds (celery `schedule`), crontab (celery `crontab`, read in the app timezone: RedBeat stores
no zone per entry), once at a time (RedBeat `rrule`, count=1; after its run our beat disables it
and it stays, `finished`, until removed). Every write stores `last_run_at` (now, for a new or
rescheduled entry), so no entry fires at once when a beat starts (RedBeat #79/#154/#192).
Building schedules and computing due times is pure logic, in `schedule_rules`.
"""

from __future__ import annotations

import fnmatch
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule

from celery_mcp.config import redact_url
from celery_mcp.errors import CeleryMcpError, InvalidArgument, NotFound, translate_errors
from celery_mcp.models.health import ComponentHealth
from celery_mcp.models.schedules import (
    AddPeriodicTaskInput,
    EntryNameInput,
    EntryOptions,
    EntryState,
    ListPeriodicTasksInput,
    ListPeriodicTasksResult,
    PeriodicTask,
    PeriodicTaskSummary,
    RemovePeriodicTaskInput,
    RemovePeriodicTaskResult,
    RunPeriodicTaskNowResult,
    UpdatePeriodicTaskInput,
)
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.health import EXTRA_CHECKS
from celery_mcp.service.registry import operation
from celery_mcp.service.schedule_rules import (
    bind,
    build_schedule,
    describe,
    next_due,
    to_score,
    tz_name,
)
from celery_mcp.service.tasks import ensure_sendable

EXTRA_FIELD = "celery_mcp"  # written by this module: created/updated times
RUN_FIELD = "celery_mcp_run"  # written by celery-mcp beat: the last run
BEATS_SUFFIX = ":celery-mcp:beats"  # hash: beat node -> heartbeat JSON
HEARTBEAT_STALE_S = 5.0  # a heartbeat older than this (plus 3 loop intervals) is a dead beat
REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "valkeys://", "unix://")


# --- the store ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """Where RedBeat keeps entries: a bounded client and the key names."""

    client: Any
    url: str
    prefix: str
    lock_key: str

    @property
    def schedule_key(self) -> str:
        return self.prefix + ":schedule"

    @property
    def beats_key(self) -> str:
        return self.prefix + BEATS_SUFFIX

    def key(self, name: str) -> str:
        return self.prefix + name


def store_location(app: Celery) -> tuple[str | None, str, str]:
    """(Redis URL or None, key prefix, lock key) of the app's RedBeat store.

    The app's own `redbeat_redis_url` wins, else the broker URL when it is Redis/Valkey.
    """
    conf = app.conf
    url = conf.get("redbeat_redis_url") or str(conf.broker_url or "")
    prefix = conf.get("redbeat_key_prefix") or "redbeat:"
    lock_key = conf.get("redbeat_lock_key") or prefix + ":lock"
    if not lock_key.startswith(prefix):
        lock_key = prefix + lock_key
    return (url if url.startswith(REDIS_SCHEMES) else None), prefix, lock_key


def get_store(cluster: Cluster) -> Store:
    """The cluster's schedule store (client created once, every call bounded)."""
    with cluster.lock:
        cached = cluster.cache.get("schedule_store")
        if cached:
            store: Store = cached[1]
            return store
        url, prefix, lock_key = store_location(cluster.app)
        if url is None:
            raise InvalidArgument(
                "schedules need a Redis/Valkey store; the broker is "
                f"{redact_url(str(cluster.app.conf.broker_url))}",
                hint="use a redis:// broker or set redbeat_redis_url in your Celery app",
            )
        import redis

        t = cluster.settings.broker_timeout_s
        client = redis.Redis.from_url(
            url.replace("valkey", "redis", 1),
            socket_timeout=t,
            socket_connect_timeout=t,
            retry_on_timeout=False,
            health_check_interval=0,
            decode_responses=True,
        )
        store = Store(client=client, url=url, prefix=prefix, lock_key=lock_key)
        cluster.cache["schedule_store"] = (0.0, store)
        return store


# --- reading and writing entries ------------------------------------------------------------


def encode(value: Any) -> str:
    from redbeat.decoder import RedBeatJSONEncoder

    return json.dumps(value, cls=RedBeatJSONEncoder)


def decode(raw: str | None) -> Any:
    from redbeat.decoder import RedBeatJSONDecoder

    return json.loads(raw, cls=RedBeatJSONDecoder) if raw else None


@dataclass
class Entry:
    """One stored entry, decoded."""

    name: str
    definition: dict[str, Any]
    last_run_at: datetime | None
    total_run_count: int
    extra: dict[str, Any]
    run: dict[str, Any]

    @property
    def schedule(self) -> BaseSchedule:
        sched: BaseSchedule = self.definition["schedule"]
        return sched

    @property
    def enabled(self) -> bool:
        return bool(self.definition.get("enabled", True))

    def nominal_next(self) -> datetime | None:
        """Next due time ignoring `enabled`; None: no more. An entry without last_run_at
        (written by other tools) counts from now, as `celery-mcp beat` anchors it."""
        return next_due(self.schedule, self.last_run_at or datetime.now(UTC))

    def next_run_at(self) -> datetime | None:
        return self.nominal_next() if self.enabled else None


FIELDS = ("definition", "meta", EXTRA_FIELD, RUN_FIELD)


def _entry(cluster: Cluster, name: str, raw: list[str | None]) -> Entry | None:
    definition_raw, meta_raw, extra_raw, run_raw = raw
    if not definition_raw:
        return None
    definition = decode(definition_raw)
    bind(definition["schedule"], cluster.app)
    meta = decode(meta_raw) or {}
    return Entry(
        name=name,
        definition=definition,
        last_run_at=meta.get("last_run_at"),
        total_run_count=int(meta.get("total_run_count") or 0),
        extra=decode(extra_raw) or {},
        run=decode(run_raw) or {},
    )


def load_entry(cluster: Cluster, name: str) -> Entry:
    """The entry `name`, or NotFound."""
    store = get_store(cluster)
    with translate_errors("broker"):
        raw = store.client.hmget(store.key(name), FIELDS)
    entry = _entry(cluster, name, raw)
    if entry is None:
        raise NotFound(
            f"no periodic task named {name!r}", hint="list_periodic_tasks shows the names"
        )
    return entry


def _write(
    cluster: Cluster,
    entry: Entry,
    *,
    create: bool = False,
    write_meta: bool = True,
) -> None:
    """Store `entry` atomically (definition, meta, score); `create` refuses an existing name.

    With `write_meta` the entry's last_run_at is stored (a re-anchor); else the stored meta,
    which a beat may have advanced since `entry` was read, is kept. Retried when a beat
    writes the entry meanwhile.
    """
    import redis

    store = get_store(cluster)
    key = store.key(entry.name)
    for _ in range(5):
        with translate_errors("broker"), store.client.pipeline() as pipe:
            try:
                pipe.watch(key)
                exists = bool(pipe.exists(key))
                if create and exists:
                    raise InvalidArgument(
                        f"a periodic task named {entry.name!r} already exists",
                        hint="pick another name, or change it with update_periodic_task",
                    )
                if not create and not exists:
                    raise NotFound(f"no periodic task named {entry.name!r}", hint="it was removed")
                stored = decode(pipe.hget(key, "meta")) or {}
                entry.total_run_count = int(stored.get("total_run_count") or 0)
                if not write_meta:
                    entry.last_run_at = stored.get("last_run_at")
                fields = {
                    "definition": encode(entry.definition),
                    EXTRA_FIELD: json.dumps(entry.extra),
                    "meta": encode(
                        {"last_run_at": entry.last_run_at, "total_run_count": entry.total_run_count}
                    ),
                }
                pipe.multi()
                pipe.hset(key, mapping=fields)
                pipe.zadd(store.schedule_key, {key: to_score(entry.next_run_at())})
                pipe.execute()
                return
            except redis.WatchError:
                continue
    raise CeleryMcpError(
        f"periodic task {entry.name!r} kept changing while it was being written",
        hint="read it again with get_periodic_task and retry",
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _options(opts: EntryOptions, current: dict[str, Any] | None = None) -> dict[str, Any]:
    options = dict(current or {})
    if opts.queue is not None:
        options["queue"] = opts.queue
    if opts.priority is not None:
        options["priority"] = opts.priority
    if opts.expires_s is not None:
        options["expires"] = opts.expires_s
    return options


def _local(app: Celery, dt: datetime | None) -> datetime | None:
    return dt.astimezone(app.timezone) if dt is not None else None


def summary(cluster: Cluster, entry: Entry) -> PeriodicTaskSummary:
    app = cluster.app
    nominal = entry.nominal_next()
    state: EntryState = (
        "finished" if nominal is None else "scheduled" if entry.enabled else "disabled"
    )
    return PeriodicTaskSummary(
        name=entry.name,
        task_name=str(entry.definition.get("task")),
        enabled=entry.enabled,
        state=state,
        schedule=describe(entry.schedule, app),
        next_run_at=_local(app, nominal if entry.enabled else None),
        last_run_at=_local(app, entry.last_run_at),
        total_run_count=entry.total_run_count,
    )


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def detail(cluster: Cluster, entry: Entry, message: str | None = None) -> PeriodicTask:
    """The full agent-facing view of an entry."""
    options = entry.definition.get("options") or {}
    expires = options.get("expires")
    return PeriodicTask(
        **summary(cluster, entry).model_dump(),
        args=list(entry.definition.get("args") or []),
        kwargs=dict(entry.definition.get("kwargs") or {}),
        queue=options.get("queue"),
        priority=options.get("priority"),
        expires_s=float(expires) if isinstance(expires, int | float) else None,
        last_task_id=entry.run.get("task_id"),
        last_fire_delay_ms=entry.run.get("delay_ms"),
        created_at=_local(cluster.app, _time(entry.extra.get("created_at"))),
        updated_at=_local(cluster.app, _time(entry.extra.get("updated_at"))),
        message=message,
    )


# --- operations -----------------------------------------------------------------------------


@operation("schedules", read_only=False)
def add_periodic_task(cluster: Cluster, request: AddPeriodicTaskInput) -> PeriodicTask:
    """Add a periodic task: every N seconds, a crontab, or once at run_at. Needs a running
    `celery-mcp beat`; it first runs at its next due time. Returns the entry and next_run_at."""
    now = _now()
    sched = build_schedule(request, cluster.app, now)
    ensure_sendable(
        cluster, request.task_name, request.args, request.kwargs, validate=request.validate_args
    )
    stamp = now.isoformat()
    entry = Entry(
        name=request.name,
        definition={
            "name": request.name,
            "task": request.task_name,
            "args": request.args,
            "kwargs": request.kwargs,
            "options": _options(request),
            "schedule": sched,
            "enabled": request.enabled,
        },
        last_run_at=now,
        total_run_count=0,
        extra={"created_at": stamp, "updated_at": stamp},
        run={},
    )
    _write(cluster, entry, create=True)
    return detail(cluster, entry, "added")


@operation("schedules", read_only=True)
def list_periodic_tasks(
    cluster: Cluster, request: ListPeriodicTasksInput
) -> ListPeriodicTasksResult:
    """List periodic tasks sorted by name, filtered by enabled and task_name (glob), one page
    at a time (offset/limit). Returns schedule, next and last run, run count."""
    store = get_store(cluster)
    with translate_errors("broker"):
        keys = sorted(k for k in store.client.zrange(store.schedule_key, 0, -1))
        with store.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, FIELDS)
            raws = pipe.execute()
    entries = []
    for key, raw in zip(keys, raws, strict=True):
        entry = _entry(cluster, key.removeprefix(store.prefix), raw)
        if entry is None:
            continue
        if request.enabled is not None and entry.enabled != request.enabled:
            continue
        task = str(entry.definition.get("task"))
        if request.task_name and not fnmatch.fnmatchcase(task, request.task_name):
            continue
        entries.append(entry)
    page = entries[request.offset : request.offset + request.limit]
    end = request.offset + len(page)
    return ListPeriodicTasksResult(
        entries=[summary(cluster, e) for e in page],
        total=len(entries),
        next_offset=end if end < len(entries) else None,
    )


@operation("schedules", read_only=True)
def get_periodic_task(cluster: Cluster, request: EntryNameInput) -> PeriodicTask:
    """One periodic task: schedule, args, enabled, last and next run, total run count and the
    last run's task_id (pass it to get_result)."""
    return detail(cluster, load_entry(cluster, request.name))


@operation("schedules", read_only=False, idempotent=True)
def update_periodic_task(cluster: Cluster, request: UpdatePeriodicTaskInput) -> PeriodicTask:
    """Change a periodic task's task, args, kwargs, schedule or options; fields left out stay.
    A new schedule starts counting from now (and revives a finished one-off). Returns the
    updated entry."""
    entry = load_entry(cluster, request.name)
    now = _now()
    definition = entry.definition
    changed = []
    if any(getattr(request, k) is not None for k in ("every", "crontab", "run_at")):
        finished = entry.nominal_next() is None
        definition["schedule"] = build_schedule(request, cluster.app, now)
        entry.last_run_at = now  # re-anchor: the new schedule counts from now
        changed.append("schedule")
        if finished and not entry.enabled:  # beat disabled it after its last run
            definition["enabled"] = True
            changed.append("enabled")
    for field, key in (("task_name", "task"), ("args", "args"), ("kwargs", "kwargs")):
        value = getattr(request, field)
        if value is not None:
            definition[key] = value
            changed.append(field)
    options = _options(request, definition.get("options"))
    if options != (definition.get("options") or {}):
        definition["options"] = options
        changed.append("options")
    if {"task_name", "args", "kwargs"} & set(changed):
        ensure_sendable(
            cluster,
            str(definition["task"]),
            definition.get("args") or [],
            definition.get("kwargs") or {},
            validate=request.validate_args,
        )
    if not changed:
        return detail(cluster, entry, "nothing to change")
    entry.extra["updated_at"] = now.isoformat()
    _write(cluster, entry, write_meta="schedule" in changed)
    return detail(cluster, entry, f"updated {', '.join(changed)}")


def _set_enabled(cluster: Cluster, name: str, enabled: bool) -> PeriodicTask:
    entry = load_entry(cluster, name)
    if entry.enabled == enabled:
        return detail(cluster, entry, f"already {'enabled' if enabled else 'disabled'}")
    now = _now()
    entry.definition["enabled"] = enabled
    entry.extra["updated_at"] = now.isoformat()
    reanchor = False
    if enabled:
        due = entry.nominal_next()
        if due is None:
            raise InvalidArgument(
                f"periodic task {name!r} is a one-off that already ran",
                hint="give it a new run_at with update_periodic_task",
            )
        reanchor = entry.last_run_at is None or (due is not None and due <= now)
        if reanchor:  # runs missed while disabled are not replayed
            entry.last_run_at = now
    _write(cluster, entry, write_meta=reanchor)
    return detail(cluster, entry, "enabled" if enabled else "disabled")


@operation("schedules", read_only=False, idempotent=True)
def enable_periodic_task(cluster: Cluster, request: EntryNameInput) -> PeriodicTask:
    """Enable a periodic task; it runs at its next due time (runs missed while disabled are
    not replayed). Returns the entry."""
    return _set_enabled(cluster, request.name, True)


@operation("schedules", read_only=False, idempotent=True)
def disable_periodic_task(cluster: Cluster, request: EntryNameInput) -> PeriodicTask:
    """Disable a periodic task without removing it (enable_periodic_task resumes it)."""
    return _set_enabled(cluster, request.name, False)


@operation("schedules", read_only=False, destructive=True, idempotent=True)
def remove_periodic_task(
    cluster: Cluster, request: RemovePeriodicTaskInput
) -> RemovePeriodicTaskResult:
    """Delete a periodic task from the store (needs confirm=true; without it returns what it
    would remove). Runs already sent are not revoked."""
    entry = load_entry(cluster, request.name)
    sched = describe(entry.schedule, cluster.app).text
    what = f"{request.name!r} ({entry.definition.get('task')}, {sched})"
    if not request.confirm:
        return RemovePeriodicTaskResult(
            name=request.name,
            executed=False,
            message=f"would remove {what}; call again with confirm=true",
        )
    store = get_store(cluster)
    key = store.key(request.name)
    with translate_errors("broker"), store.client.pipeline() as pipe:
        pipe.zrem(store.schedule_key, key)
        pipe.delete(key)
        pipe.execute()
    return RemovePeriodicTaskResult(name=request.name, executed=True, message=f"removed {what}")


@operation("schedules", read_only=False)
def run_periodic_task_now(cluster: Cluster, request: EntryNameInput) -> RunPeriodicTaskNowResult:
    """Send one extra run of a periodic task now, with its args and options; its schedule and
    run count do not change. Returns the task_id for get_result."""
    entry = load_entry(cluster, request.name)
    task = str(entry.definition.get("task"))
    args = entry.definition.get("args") or []
    kwargs = entry.definition.get("kwargs") or {}
    ensure_sendable(cluster, task, args, kwargs, validate=False)
    task_id = f"{request.name}:now-{uuid.uuid4().hex[:12]}"
    options = dict(entry.definition.get("options") or {})
    with translate_errors("broker"):
        cluster.app.send_task(
            task, args=args, kwargs=kwargs, task_id=task_id, retry=True, **options
        )
    return RunPeriodicTaskNowResult(
        name=request.name, task_id=task_id, task_name=task, message="sent now; schedule unchanged"
    )


# --- health ---------------------------------------------------------------------------------


def _unavailable(exc: CeleryMcpError) -> ComponentHealth:
    if isinstance(exc, InvalidArgument):
        return ComponentHealth(ok=None, detail=exc.message)
    return ComponentHealth(ok=False, detail=str(exc))


def check_schedule_store(cluster: Cluster) -> ComponentHealth:
    """Reach the schedule store and count its entries (bounded by the broker timeout)."""
    start = time.perf_counter()
    try:
        store = get_store(cluster)
        with translate_errors("broker"), store.client.pipeline(transaction=False) as pipe:
            pipe.zcard(store.schedule_key)
            pipe.zcount(store.schedule_key, 0, "+inf")
            total, scheduled = pipe.execute()
    except CeleryMcpError as exc:
        return _unavailable(exc)
    return ComponentHealth(
        ok=True,
        latency_ms=round((time.perf_counter() - start) * 1e3, 2),
        detail=f"{total} periodic task(s), {scheduled} with a next run; "
        f"RedBeat store {redact_url(store.url)} prefix {store.prefix!r}",
    )


def beat_heartbeats(cluster: Cluster) -> list[dict[str, Any]]:
    """Heartbeats of every `celery-mcp beat` that wrote one (fresh or not)."""
    store = get_store(cluster)
    with translate_errors("broker"):
        raw = store.client.hgetall(store.beats_key)
    beats = []
    for value in raw.values():
        try:
            beats.append(dict(json.loads(value)))
        except ValueError:
            continue
    return beats


def check_beat(cluster: Cluster) -> ComponentHealth:
    """Is a beat alive (fresh heartbeat or held lock) and when did it last tick."""
    start = time.perf_counter()
    try:
        store = get_store(cluster)
        beats = beat_heartbeats(cluster)
        with translate_errors("broker"), store.client.pipeline(transaction=False) as pipe:
            pipe.pttl(store.lock_key)
            pipe.zcount(store.schedule_key, 0, "+inf")
            lock_ttl_ms, scheduled = pipe.execute()
    except CeleryMcpError as exc:
        return _unavailable(exc)
    now = time.time()
    fresh = [
        b
        for b in beats
        if now - float(b.get("last_tick_at", 0))
        <= HEARTBEAT_STALE_S + 3 * float(b.get("max_interval_s", 1))
    ]
    active = [b for b in fresh if b.get("role") == "active"]
    latency = round((time.perf_counter() - start) * 1e3, 2)
    if active:
        b = active[0]
        ago = now - float(b["last_tick_at"])
        standby = len(fresh) - len(active)
        zone = b.get("timezone", tz_name(cluster.app))
        if zone != tz_name(cluster.app):
            return ComponentHealth(
                ok=False,
                latency_ms=latency,
                detail=f"beat {b.get('node')} reads crontabs in {zone}, this server in "
                f"{tz_name(cluster.app)}: set CELERY_MCP_TIMEZONE the same for both",
            )
        return ComponentHealth(
            ok=True,
            latency_ms=latency,
            detail=f"beat {b.get('node')} active, last tick {ago:.1f}s ago "
            f"(at {datetime.fromtimestamp(float(b['last_tick_at']), UTC).isoformat()}); "
            f"{standby} standby",
        )
    if lock_ttl_ms and lock_ttl_ms > 0:
        return ComponentHealth(
            ok=True,
            latency_ms=latency,
            detail=f"beat lock held (expires in {lock_ttl_ms / 1000:.1f}s) by a beat without "
            "heartbeat (e.g. a stock celery beat with RedBeat)",
        )
    if not scheduled:
        return ComponentHealth(
            ok=None, latency_ms=latency, detail="no beat running (no periodic task to run)"
        )
    return ComponentHealth(
        ok=False,
        latency_ms=latency,
        detail=f"{scheduled} periodic task(s) scheduled but no beat is running; "
        "start one with `celery-mcp beat`",
    )


EXTRA_CHECKS["beat"] = check_beat
EXTRA_CHECKS["schedule_store"] = check_schedule_store
