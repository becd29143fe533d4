"""Workers: inspect and control them, and the queues they consume, shaped like Celery's
`celery/app/control.py`.

- Inspect commands have no side effects: they read what workers hold and the broker's queues.
- Control commands have side effects: pool size, consumers, rate and time limits, purge,
  shutdown.

Every command goes through one funnel, `discovery.request`, which knows how many workers can
answer, so a healthy cluster answers in milliseconds and a silent worker is reported missing,
never dropped. `destination` (hostnames, default every worker) and `timeout_s` mean the same
everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from celery_mcp.errors import InvalidArgument, NotFound, translate_errors
from celery_mcp.models.common import Truncation
from celery_mcp.models.workers import (
    REGISTERED_CAP,
    ActiveTasksInput,
    ActiveTasksResult,
    Autoscale,
    ControlCommand,
    ControlInput,
    ControlResult,
    InspectWorkersInput,
    InspectWorkersResult,
    PingInput,
    PingResult,
    PurgeQueueInput,
    PurgeQueueResult,
    QueueDepth,
    QueueLengthsInput,
    QueueLengthsResult,
    RegisteredTasksInput,
    RegisteredTasksResult,
    ShutdownInput,
    ShutdownResult,
    Target,
    TaskCounts,
    TaskOnWorker,
    WorkerCounts,
    WorkerInfo,
    WorkerPing,
    WorkerRegistered,
    WorkerReply,
    WorkerStats,
    WorkerTasks,
)
from celery_mcp.service import cancel, discovery
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import Replies
from celery_mcp.service.limits import cap_json
from celery_mcp.service.priority import HIGHEST, from_broker
from celery_mcp.service.redis_layout import layout
from celery_mcp.stores.keys import TIME_LIMIT_COMMAND

#: Bytes kept of one task's args (and of its kwargs) in task lists.
TASK_ARGS_CAP_BYTES = 2_000
SHUTDOWN_POLL_S = 0.1
PLAIN_WORKER_TIME_LIMIT = (
    "not a celery-mcp worker: Celery applies new limits after its next pool_restart"
)
#: queue_lengths without consumers names the queues workers consumed within this long.
QUEUES_SEEN_S = 300.0
QUEUE_NOTE = (
    "messages waiting on the broker; tasks a worker already prefetched are not counted here "
    "(get_active_tasks lists them as reserved)"
)


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1e3, 2)


# -- Inspect: no side effects


def _request(cluster: Cluster, target: Target, command: str, **arguments: Any) -> Replies:
    """The one funnel: `command` to the targeted workers, replies collected, the silent named."""
    return discovery.request(
        cluster,
        command,
        arguments=arguments,
        destination=target.destination,
        timeout_s=target.timeout_s,
    )


def _roll_fields(roll: Replies, start: float) -> dict[str, Any]:
    """The fields every result shares: missing workers, the timeout used, the call's time."""
    return {"missing": roll.missing, "timeout_s": roll.timeout_s, "elapsed_ms": _elapsed_ms(start)}


#: Threads that ask follow-up inspect commands side by side. Kept: each thread's reply queue
#: (kombu names it per thread) is declared once, not once per call.
_FOLLOW_UPS = ThreadPoolExecutor(max_workers=5, thread_name_prefix="celery-mcp-inspect")


def _follow_up(cluster: Cluster, roll: Replies, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Ask the workers that answered `roll` more inspect commands, all at once (each reply
    takes a broker round trip: five in a row cost five). A worker that falls silent is added
    to `roll.missing` once; it costs one timeout."""
    answering = list(roll.by_worker)
    if not answering:
        return {method: {} for method in methods}

    def ask(method: str) -> Replies:
        return discovery.request(
            cluster, method, destination=answering, timeout_s=roll.timeout_s, alive=True
        )

    answers = dict(zip(methods, _FOLLOW_UPS.map(ask, methods), strict=True))
    known = {m.hostname for m in roll.missing}
    for more in answers.values():
        for silent in more.missing:
            if silent.hostname not in known:
                known.add(silent.hostname)
                roll.missing.append(silent)
    return {method: more.by_worker for method, more in answers.items()}


def ping_workers(cluster: Cluster, request: PingInput) -> PingResult:
    """Ping workers: who answers (with latency) and who is missing."""
    start = time.perf_counter()
    roll = _request(cluster, request, "ping")
    workers = sorted(
        (WorkerPing(hostname=h, latency_ms=roll.latency_ms.get(h, 0.0)) for h in roll.by_worker),
        key=lambda w: w.latency_ms,
    )
    return PingResult(active_workers=workers, **_roll_fields(roll, start))


def _user_priority(cluster: Cluster, broker_priority: Any) -> int | None:
    return from_broker(cluster, broker_priority) if isinstance(broker_priority, int) else None


def _when(epoch: Any) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if isinstance(epoch, int | float) else None


def _task(
    cluster: Cluster, raw: dict[str, Any], worker: str, cuts: list[Truncation]
) -> TaskOnWorker:
    """One entry of active/reserved (a request) or scheduled ({eta, priority, request})."""
    req = raw.get("request", raw)
    args, cut_args = cap_json("args", req.get("args"), TASK_ARGS_CAP_BYTES)
    kwargs, cut_kwargs = cap_json("kwargs", req.get("kwargs"), TASK_ARGS_CAP_BYTES)
    cuts += [c for c in (cut_args, cut_kwargs) if c]
    delivery = req.get("delivery_info") or {}
    eta = raw.get("eta")
    return TaskOnWorker(
        id=str(req.get("id")),
        name=req.get("name"),
        worker=worker,
        args=args,
        kwargs=kwargs,
        queue=delivery.get("routing_key"),
        worker_pid=req.get("worker_pid"),
        started_at=_when(req.get("time_start")),
        eta=datetime.fromisoformat(eta) if isinstance(eta, str) else None,
        priority=_user_priority(cluster, raw.get("priority", delivery.get("priority"))),
        acknowledged=req.get("acknowledged"),
    )


def _tasks_of(
    cluster: Cluster, hostname: str, sections: dict[str, dict[str, Any]], max_tasks: int
) -> dict[str, Any]:
    """WorkerTasks fields of one worker from the active/reserved/scheduled replies."""
    fields: dict[str, Any] = {"hostname": hostname, "active_count": 0, "truncated": []}
    for name, replies in sections.items():
        entries = replies.get(hostname) or []
        fields[f"{name}_count"] = len(entries)
        fields[f"{name}_tasks"] = [
            _task(cluster, e, hostname, fields["truncated"]) for e in entries[:max_tasks]
        ]
    return fields


def _task_counts(workers: Sequence[WorkerTasks], sections: list[str]) -> dict[str, Any]:
    return {
        "workers": len(workers),
        **{s: sum(getattr(w, f"{s}_count") or 0 for w in workers) for s in sections},
    }


def get_active_tasks(cluster: Cluster, request: ActiveTasksInput) -> ActiveTasksResult:
    """Tasks running on each worker, plus reserved (prefetched) and scheduled (ETA) ones."""
    start = time.perf_counter()
    sections = ["active"]
    sections += ["reserved"] if request.include_reserved else []
    sections += ["scheduled"] if request.include_scheduled else []
    roll = _request(cluster, request, "active")
    replies = {"active": roll.by_worker, **_follow_up(cluster, roll, sections[1:])}
    workers = [
        WorkerTasks(**_tasks_of(cluster, h, replies, request.max_tasks)) for h in roll.by_worker
    ]
    return ActiveTasksResult(
        counts=TaskCounts(**_task_counts(workers, sections)),
        tasks=[t for w in workers for t in w.active_tasks],
        reserved=[t for w in workers for t in w.reserved_tasks],
        scheduled=[t for w in workers for t in w.scheduled_tasks],
        truncated=[c for w in workers for c in w.truncated],
        **_roll_fields(roll, start),
    )


def _capped_names(field: str, names: list[str], cuts: list[Truncation]) -> list[str]:
    if len(names) > REGISTERED_CAP:
        cuts.append(f"{field}: {len(names)} -> {REGISTERED_CAP} names")
    return names[:REGISTERED_CAP]


def get_registered_tasks(cluster: Cluster, request: RegisteredTasksInput) -> RegisteredTasksResult:
    """Task names each worker can run, and their union."""
    start = time.perf_counter()
    roll = _request(cluster, request, "registered")
    cuts: list[Truncation] = []
    by_worker = discovery.registered_names(roll.by_worker)
    workers = [
        WorkerRegistered(
            hostname=h, tasks=_capped_names(f"{h}.tasks", names, cuts), count=len(names)
        )
        for h, names in by_worker.items()
    ]
    union = sorted({t for names in by_worker.values() for t in names})
    return RegisteredTasksResult(
        tasks=_capped_names("tasks", union, cuts),
        total=len(union),
        workers=workers,
        truncated=cuts,
        **_roll_fields(roll, start),
    )


def _pool_name(implementation: Any) -> str | None:
    """'celery.concurrency.prefork:TaskPool' -> 'prefork'."""
    if not isinstance(implementation, str):
        return None
    return implementation.split(":")[0].rsplit(".", 1)[-1]


def _worker_info(
    cluster: Cluster,
    hostname: str,
    stats: dict[str, Any],
    replies: dict[str, dict[str, Any]],
    max_tasks: int,
) -> WorkerInfo:
    pool = stats.get("pool") or {}
    scaler = stats.get("autoscaler") or {}
    totals = {str(k): int(v) for k, v in (stats.get("total") or {}).items()}
    sections = {s: replies[s] for s in ("active", "reserved", "scheduled")}
    processes = pool.get("processes")
    return WorkerInfo(
        **_tasks_of(cluster, hostname, sections, max_tasks),
        stats=WorkerStats(
            pid=stats.get("pid"),
            uptime_s=stats.get("uptime"),
            pool=_pool_name(pool.get("implementation")),
            concurrency=pool.get("max-concurrency"),
            pool_processes=processes if isinstance(processes, list) else [],
            autoscale=Autoscale(max=scaler["max"], min=scaler["min"]) if "max" in scaler else None,
            prefetch_count=stats.get("prefetch_count"),
            processed=sum(totals.values()),
            total=totals,
        ),
        queues=sorted(q["name"] for q in replies["active_queues"].get(hostname) or []),
        registered=(replies["registered"].get(hostname) or [])[:REGISTERED_CAP],
        registered_count=len(replies["registered"].get(hostname) or []),
    )


def inspect_workers(cluster: Cluster, request: InspectWorkersInput) -> InspectWorkersResult:
    """Per worker: stats (pool, concurrency, processed), queues, registered and held tasks; missing
    workers."""
    start = time.perf_counter()
    roll = _request(cluster, request, "stats")
    methods = ["active", "reserved", "scheduled", "registered", "active_queues"]
    replies = _follow_up(cluster, roll, methods)
    replies["registered"] = discovery.registered_names(replies["registered"])
    workers = [
        _worker_info(cluster, h, stats or {}, replies, request.max_tasks)
        for h, stats in roll.by_worker.items()
    ]
    return InspectWorkersResult(
        counts=WorkerCounts(
            **_task_counts(workers, ["active", "reserved", "scheduled"]),
            missing=len(roll.missing),
            processed=sum(w.stats.processed for w in workers),
            concurrency=sum(w.stats.concurrency or 0 for w in workers),
        ),
        workers=workers,
        **_roll_fields(roll, start),
    )


#: URL scheme -> the broker transport queue_lengths reports (Sentinel's is kombu's Redis one).
BROKER_KINDS = {
    **dict.fromkeys(("rediss", "valkey", "valkeys", "sentinel"), "redis"),
    **dict.fromkeys(("amqps", "pyamqp"), "amqp"),
}


def _broker_kind(cluster: Cluster) -> str:
    scheme = cluster.broker_url.split("://", 1)[0].split("+", 1)[0]
    return BROKER_KINDS.get(scheme, scheme)


def _priority_label(cluster: Cluster, steps: tuple[int, ...], step: int) -> str:
    """The user's priorities a sub-queue holds ('9-7'): kombu files broker priority p under
    the highest step <= p."""
    higher = [s for s in steps if s > step]
    top = (min(higher) - 1) if higher else HIGHEST
    ends = sorted({from_broker(cluster, step), from_broker(cluster, top)}, reverse=True)
    return "-".join(str(e) for e in ends)


def _redis_keys(cluster: Cluster, names: list[str]) -> dict[str, dict[int, tuple[str, Any]]]:
    """queue -> priority step -> (key, (TYPE, LLEN)) for each queue's keys, one round trip."""
    lay = layout(cluster)
    keys = {n: lay.queue_keys(n) for n in names}
    with translate_errors("broker"):
        pipe = cluster.broker_redis.pipeline(transaction=False)
        for per_step in keys.values():
            for key in per_step.values():
                pipe.type(key)
                pipe.llen(key)
        replies = iter(pipe.execute(raise_on_error=False))
    return {
        n: {step: (key, (next(replies), next(replies))) for step, key in per_step.items()}
        for n, per_step in keys.items()
    }


def _redis_depths(cluster: Cluster, names: list[str]) -> dict[str, QueueDepth]:
    """LLEN of each queue and of the priority sub-queues kombu keeps beside it."""
    steps = layout(cluster).priority_steps
    depths: dict[str, QueueDepth] = {}
    for name, per_step in _redis_keys(cluster, names).items():
        kinds = {_text(kind) for _, (kind, _) in per_step.values()} - {"list", "none"}
        counts = {
            _priority_label(cluster, steps, step): int(size)
            for step, (_, (_, size)) in per_step.items()
            if isinstance(size, int)
        }
        depths[name] = QueueDepth(
            name=name,
            messages=None if kinds else sum(counts.values()),
            by_priority={p: c for p, c in counts.items() if c},
            exists=True,
            error=f"not a queue: a Redis {', '.join(sorted(kinds))} key" if kinds else None,
        )
    return depths


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _amqp_depths(cluster: Cluster, names: list[str]) -> dict[str, QueueDepth]:
    """Passive queue_declare of each queue: message and consumer counts, or 'no such queue'."""
    depths: dict[str, QueueDepth] = {}
    with translate_errors("broker"), cluster.app.connection_or_acquire() as conn:
        for name in names:
            channel = conn.channel()
            try:
                _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                depths[name] = QueueDepth(
                    name=name, messages=messages, consumer_count=consumers, exists=True
                )
            except conn.channel_errors:
                depths[name] = QueueDepth(name=name, messages=0, exists=False)
            finally:
                try:
                    channel.close()
                except conn.connection_errors + conn.channel_errors:  # closed by the 404
                    pass
    return depths


def queue_depths(cluster: Cluster, names: list[str]) -> dict[str, QueueDepth]:
    """Messages waiting in each named queue, read on the broker (no worker is asked)."""
    if cluster.broker_is_redis:
        return _redis_depths(cluster, names)
    if _broker_kind(cluster) == "amqp":
        return _amqp_depths(cluster, names)
    with translate_errors("broker"), cluster.app.connection_or_acquire() as conn:
        return {
            n: QueueDepth(
                name=n,
                messages=conn.default_channel.queue_declare(queue=n, passive=True)[1],
                exists=True,
            )
            for n in names
        }


def queue_lengths(cluster: Cluster, request: QueueLengthsInput) -> QueueLengthsResult:
    """Messages waiting per queue and the workers consuming each (default: consumed queues + default
    queue). The broker is read every call; workers are asked when `timeout_s` is given, else
    their answer of the last few seconds is used, and not at all without `consumers`."""
    start = time.perf_counter()
    roll: discovery.Replies | None
    if request.timeout_s is not None:
        roll = discovery.request(cluster, "active_queues", timeout_s=request.timeout_s)
    elif request.consumers:
        roll = discovery.active_queues(cluster)
    else:  # the broker only; the queue lists workers gave lately, if any, name the queues
        roll = discovery.recent_active_queues(cluster, QUEUES_SEEN_S)
    consumers = discovery.consumers_by_queue(roll.by_worker) if roll else {}
    default = str(cluster.app.conf.task_default_queue)
    names = request.queues or sorted({default, *consumers})
    depths = queue_depths(cluster, list(dict.fromkeys(names)))
    if request.consumers:
        for name, depth in depths.items():
            depth.consumers = consumers.get(name, [])
    ordered = sorted(depths.values(), key=lambda d: (-(d.messages or 0), d.name))
    roll_fields = (
        _roll_fields(roll, start)
        if roll
        else {"missing": [], "timeout_s": 0.0, "elapsed_ms": _elapsed_ms(start)}
    )
    return QueueLengthsResult(
        broker=_broker_kind(cluster),
        total_messages=sum(d.messages or 0 for d in ordered),
        queues=ordered,
        note=QUEUE_NOTE,
        **roll_fields,
    )


# -- Control: side effects


def pool_restart(cluster: Cluster, target: Target) -> Replies:
    """Replace the pool processes: each exits after its current or next task (an idle one
    waits for a task) and a fresh one takes its place. Re-imports no module."""
    return _request(cluster, target, "pool_restart", modules=None, reload=False)


def pool_grow(cluster: Cluster, target: Target, n: int = 1) -> Replies:
    return _request(cluster, target, "pool_grow", n=n)


def pool_shrink(cluster: Cluster, target: Target, n: int = 1) -> Replies:
    return _request(cluster, target, "pool_shrink", n=n)


def autoscale(cluster: Cluster, target: Target, max: int, min: int) -> Replies:
    return _request(cluster, target, "autoscale", max=max, min=min)


def add_consumer(cluster: Cluster, target: Target, queue: str) -> Replies:
    return _request(cluster, target, "add_consumer", queue=queue)


def cancel_consumer(cluster: Cluster, target: Target, queue: str) -> Replies:
    return _request(cluster, target, "cancel_consumer", queue=queue)


def rate_limit(cluster: Cluster, target: Target, task_name: str, rate: str) -> Replies:
    return _request(cluster, target, "rate_limit", task_name=task_name, rate_limit=rate)


def time_limit(
    cluster: Cluster, target: Target, task_name: str, soft: float | None, hard: float | None
) -> Replies:
    """Set (or, when None, remove) a task's time limits for the next task started.

    celery-mcp workers apply them at once (`mcp_time_limit`); on other workers Celery's own
    `time_limit` sets them and, in Celery 5.7, they apply after that worker's next pool_restart.
    """
    args = {"task_name": task_name, "soft": soft, "hard": hard}
    roll = _request(cluster, target, TIME_LIMIT_COMMAND, **args)
    unknown = {"error": f"KeyError({TIME_LIMIT_COMMAND!r})"}
    plain = [h for h, body in roll.by_worker.items() if body == unknown]
    if plain:
        again = Target(destination=plain, timeout_s=target.timeout_s)
        fallback = _request(cluster, again, "time_limit", **args)
        for host, body in fallback.by_worker.items():
            if isinstance(body, dict) and "ok" in body:
                body = {"ok": f"{body['ok']}; {PLAIN_WORKER_TIME_LIMIT}"}
            roll.by_worker[host] = body
        roll.missing += fallback.missing
    return roll


#: control_workers' command -> the function above, called with the request's arguments.
COMMANDS: dict[ControlCommand, Callable[[Cluster, ControlInput], Replies]] = {
    ControlCommand.POOL_RESTART: lambda c, r: pool_restart(c, r),
    ControlCommand.POOL_GROW: lambda c, r: pool_grow(c, r, r.n or 1),
    ControlCommand.POOL_SHRINK: lambda c, r: pool_shrink(c, r, r.n or 1),
    ControlCommand.AUTOSCALE: lambda c, r: autoscale(c, r, r.max or 0, r.min or 0),
    ControlCommand.ADD_CONSUMER: lambda c, r: add_consumer(c, r, str(r.queue)),
    ControlCommand.CANCEL_CONSUMER: lambda c, r: cancel_consumer(c, r, str(r.queue)),
    ControlCommand.RATE_LIMIT: lambda c, r: rate_limit(c, r, str(r.task_name), str(r.rate)),
    ControlCommand.TIME_LIMIT: lambda c, r: time_limit(c, r, str(r.task_name), r.soft, r.hard),
}


def _reply(hostname: str, body: Any) -> WorkerReply:
    """{'ok': msg} or {'error': msg} (or a raised exception's repr) -> WorkerReply."""
    if isinstance(body, dict) and "ok" in body:
        return WorkerReply(hostname=hostname, ok=True, message=str(body["ok"]))
    if isinstance(body, dict) and "error" in body:
        return WorkerReply(hostname=hostname, ok=False, message=str(body["error"]))
    return WorkerReply(hostname=hostname, ok=False, message=f"unexpected reply: {body!r}"[:500])


def _arguments(req: ControlInput) -> dict[str, Any]:
    fields = ("n", "max", "min", "queue", "task_name", "rate", "soft", "hard")
    return {f: getattr(req, f) for f in fields if getattr(req, f) is not None}


def control_workers(cluster: Cluster, request: ControlInput) -> ControlResult:
    """Remote control: pool_restart (needs confirm=true), pool_grow/shrink, autoscale,
    add/cancel_consumer, rate_limit, time_limit."""
    start = time.perf_counter()
    command = request.command
    if command == ControlCommand.POOL_RESTART and not request.confirm:
        roll = _request(cluster, request, "ping")
        names = ", ".join(roll.by_worker) or "no worker"
        message = f"would restart the pools of {names}; call again with confirm=true"
        return _control_result(request, roll, [], message, start)
    roll = COMMANDS[command](cluster, request)
    cluster.queue_census = None  # consumers may have changed: the next census asks again
    replies = [_reply(h, body) for h, body in roll.by_worker.items()]
    failed = sum(not r.ok for r in replies)
    message = f"{command.value}: {len(replies) - failed} ok, {failed} error(s)"
    return _control_result(request, roll, replies, message, start, executed=True)


def _control_result(
    req: ControlInput,
    roll: Replies,
    replies: list[WorkerReply],
    message: str,
    start: float,
    *,
    executed: bool = False,
) -> ControlResult:
    missing = f", {len(roll.missing)} missing" if roll.missing else ""
    return ControlResult(
        command=req.command,
        executed=executed,
        arguments=_arguments(req),
        ok=sum(r.ok for r in replies),
        errors=sum(not r.ok for r in replies),
        replies=replies,
        message=message + missing,
        **_roll_fields(roll, start),
    )


def _check_purgeable(cluster: Cluster, queue: str) -> None:
    """Refuse what is not a task queue, before any write: a control mailbox, or on Redis a key
    of another kind (kombu's purge would delete it: its MULTI runs the DEL even when LLEN
    fails with WRONGTYPE)."""
    if queue.endswith(".pidbox") or queue.startswith("_kombu"):
        raise InvalidArgument(
            f"{queue!r} is a control mailbox, not a task queue",
            hint="queue_lengths lists the task queues",
        )
    if not cluster.broker_is_redis:
        return
    for key, (kind, _) in _redis_keys(cluster, [queue])[queue].values():
        if _text(kind) not in ("list", "none"):
            raise InvalidArgument(
                f"{queue!r} is not a queue: the broker key {key!r} is a Redis {_text(kind)}, "
                "and purging would delete it",
                hint="queue_lengths lists the task queues",
            )


def purge_queue(cluster: Cluster, request: PurgeQueueInput) -> PurgeQueueResult:
    """Delete all waiting messages of a queue. Needs confirm=true; else says how many it
    would delete."""
    queue = request.queue
    _check_purgeable(cluster, queue)
    before = queue_depths(cluster, [queue])[queue]
    if not before.exists:
        raise NotFound(f"no queue {queue!r} on the broker", hint="queue_lengths lists the queues")
    count = before.messages or 0
    if not request.confirm:
        return PurgeQueueResult(
            queue=queue,
            executed=False,
            messages_before=count,
            removed=0,
            remaining=count,
            message=f"would delete {count} message(s) from {queue!r}; call again with confirm=true",
        )
    with translate_errors("broker"), cluster.app.connection_or_acquire() as conn:
        removed = int(conn.default_channel.queue_purge(queue) or 0)
    after = queue_depths(cluster, [queue])[queue].messages or 0
    return PurgeQueueResult(
        queue=queue,
        executed=True,
        messages_before=count,
        removed=removed,
        remaining=after,
        message=f"deleted {removed} message(s) from {queue!r}; {after} waiting now",
    )


def _still_registered(cluster: Cluster, names: list[str]) -> list[str]:
    """Which of `names` are still in the cluster: registered (Redis) or answering ping."""
    found = discovery.census(cluster)
    if found is not None:
        return [n for n in names if n in found.registered]
    return list(discovery.request(cluster, "ping", destination=names).by_worker)


def shutdown_workers(cluster: Cluster, request: ShutdownInput) -> ShutdownResult:
    """Stop workers (warm); no destination stops ALL. Needs confirm=true, else lists who would
    stop."""
    start = time.perf_counter()
    roll = _request(cluster, request, "ping")
    targets = list(roll.by_worker)
    if not request.confirm or not targets:
        what = ", ".join(targets) or "no worker (none answered)"
        return ShutdownResult(
            executed=False,
            targets=targets,
            stopped=[],
            stopping=[],
            message=f"would stop {what}; call again with confirm=true" if targets else what,
            **_roll_fields(roll, start),
        )
    discovery.cast(cluster, "shutdown", {}, targets)
    deadline = time.monotonic() + request.wait_s
    remaining = _still_registered(cluster, targets)
    while remaining and time.monotonic() < deadline:
        cancel.sleep(SHUTDOWN_POLL_S)
        remaining = _still_registered(cluster, remaining)
    stopped = [t for t in targets if t not in remaining]
    tail = f"; {len(remaining)} still finishing running tasks" if remaining else ""
    return ShutdownResult(
        executed=True,
        targets=targets,
        stopped=stopped,
        stopping=remaining,
        message=f"stopped {len(stopped)} of {len(targets)} worker(s){tail}",
        **_roll_fields(roll, start),
    )
