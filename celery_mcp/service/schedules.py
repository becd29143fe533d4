"""Schedules: periodic tasks in the schedule store (stores.schedules), run by celery-mcp beat.

Schedule kinds: every N seconds (celery `schedule`), crontab (celery `crontab`, read in the app
timezone: RedBeat stores no zone per entry), once at a time (RedBeat `rrule`, count=1; after
its run our beat disables it and it stays, `finished`, until removed). Every write stores
`last_run_at` (now, for a new or rescheduled entry), so no entry fires at once when a beat
starts (RedBeat #79/#154/#192). Every change is made on the entry as stored at the moment of
writing (`ScheduleStore.update`), so concurrent changes never undo each other. Building
schedules and computing due times is pure logic, in `schedule_rules`.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule

from celery_mcp.client_backend import reply_options
from celery_mcp.errors import CeleryMcpError, InvalidArgument, NotFound, translate_errors
from celery_mcp.models.schedules import (
    AddPeriodicTaskInput,
    EntryNameInput,
    EntryOptions,
    EntryState,
    ListPeriodicTasksInput,
    ListPeriodicTasksResult,
    MissedRun,
    PeriodicTask,
    PeriodicTaskSummary,
    RemovePeriodicTaskInput,
    RemovePeriodicTaskResult,
    RunPeriodicTaskNowResult,
    UnsentRun,
    UpdatePeriodicTaskInput,
)
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.policy import check_task_allowed
from celery_mcp.service.priority import from_broker, to_broker
from celery_mcp.service.schedule_rules import build_schedule, describe, next_due
from celery_mcp.service.sending import ensure_sendable
from celery_mcp.stores.schedules import (
    Entry,
    EntryConflict,
    PendingRun,
    ScheduleStore,
    Write,
    to_score,
)


def get_store(cluster: Cluster) -> ScheduleStore:
    """The cluster's schedule store (InvalidArgument when there is no Redis/Valkey for it)."""
    with translate_errors("broker"):
        return cluster.schedules


def nominal_next(entry: Entry) -> datetime | None:
    """Next due time ignoring `enabled`; None: no more. An entry without last_run_at (written by
    other tools) counts from now, as `celery-mcp beat` anchors it."""
    return next_due(entry.schedule, entry.last_run_at or datetime.now(UTC))


def next_run_at(entry: Entry) -> datetime | None:
    return nominal_next(entry) if entry.enabled else None


def scored(entry: Entry) -> Write:
    """`entry` with its schedule score (next due time; -1 when it will not run)."""
    return entry, to_score(next_run_at(entry))


def load_entry(cluster: Cluster, name: str) -> Entry:
    """The entry `name`, or NotFound."""
    store = get_store(cluster)
    with translate_errors("broker"):
        entry = store.read(name)
    if entry is None:
        raise NotFound(
            f"no periodic task named {name!r}", hint="list_periodic_tasks shows the names"
        )
    return entry


def _update(
    cluster: Cluster, name: str, change: Callable[[Entry | None], Write | None]
) -> Entry | None:
    """`ScheduleStore.update` with errors translated."""
    store = get_store(cluster)
    try:
        with translate_errors("broker"):
            return store.update(name, change)
    except EntryConflict:
        raise CeleryMcpError(
            f"periodic task {name!r} kept changing while it was being written",
            hint="read it again with get_periodic_task and retry",
        ) from None


def _existing(name: str, stored: Entry | None) -> Entry:
    if stored is None:
        raise NotFound(f"no periodic task named {name!r}", hint="it was removed")
    return stored


def _now() -> datetime:
    return datetime.now(UTC)


def _options(
    cluster: Cluster, opts: EntryOptions, current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The entry's send options (as Celery sends them: the broker's priority)."""
    options = dict(current or {})
    if opts.queue is not None:
        options["queue"] = opts.queue
    if opts.priority is not None:
        options["priority"] = to_broker(cluster, opts.priority)
    if opts.expires_s is not None:
        options["expires"] = opts.expires_s
    return options


def _local(app: Celery, dt: datetime | None) -> datetime | None:
    return dt.astimezone(app.timezone) if dt is not None else None


def summary(cluster: Cluster, entry: Entry) -> PeriodicTaskSummary:
    app = cluster.app
    nominal = nominal_next(entry)
    state: EntryState = (
        "finished" if nominal is None else "scheduled" if entry.enabled else "disabled"
    )
    return PeriodicTaskSummary(
        name=entry.name,
        task_name=entry.task,
        enabled=entry.enabled,
        state=state,
        schedule=describe(entry.schedule, app),
        next_run_at=_local(app, nominal if entry.enabled else None),
        last_run_at=_local(app, entry.last_run_at),
        total_run_count=entry.total_run_count,
    )


def _at(app: Celery, dt: datetime) -> datetime:
    return dt.astimezone(app.timezone)


def _unsent(app: Celery, run: PendingRun | None) -> UnsentRun | None:
    if run is None:
        return None
    return UnsentRun(
        task_id=run.task_id,
        due_at=_at(app, run.due_at),
        deadline=_at(app, run.deadline),
        attempts=run.attempts,
        last_error=run.error,
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
        priority=(
            from_broker(cluster, options["priority"])
            if isinstance(options.get("priority"), int)
            else None
        ),
        expires_s=float(expires) if isinstance(expires, int | float) else None,
        last_task_id=entry.run.task_id,
        last_fire_delay_ms=entry.run.delay_ms,
        last_refusal=entry.run.refused,
        last_send_attempts=entry.run.attempts or None,
        unsent_run=_unsent(cluster.app, entry.run.pending),
        missed_runs=[
            MissedRun(
                due_at=_at(cluster.app, m.due_at),
                runs=m.runs,
                task_id=m.task_id,
                reason=m.reason,
                recorded_at=_at(cluster.app, m.recorded_at),
            )
            for m in entry.run.missed
        ],
        missed_run_count=entry.run.missed_count,
        created_at=_local(cluster.app, _time(entry.extra.get("created_at"))),
        updated_at=_local(cluster.app, _time(entry.extra.get("updated_at"))),
        message=message,
    )


# --- operations ---------------------------------------------------------------------------


def _checked_task(cluster: Cluster, entry: Entry, *, validate: bool) -> None:
    """The checks of every write that can make an entry run: the task allowlist always; the
    task, caps and signature with `validate`."""
    args = entry.definition.get("args") or []
    kwargs = entry.definition.get("kwargs") or {}
    if validate:
        ensure_sendable(cluster, entry.task, args, kwargs, validate=True)
    else:
        check_task_allowed(cluster.settings, entry.task)


def add_periodic_task(cluster: Cluster, request: AddPeriodicTaskInput) -> PeriodicTask:
    """Store a new entry, checked like a send; it first runs at its next due time."""
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
            "options": _options(cluster, request),
            "schedule": sched,
            "enabled": request.enabled,
        },
        last_run_at=now,
        extra={"created_at": stamp, "updated_at": stamp},
    )

    def create(stored: Entry | None) -> Write:
        if stored is not None:
            raise InvalidArgument(
                f"a periodic task named {request.name!r} already exists",
                hint="pick another name, or change it with update_periodic_task",
            )
        return scored(entry)

    _update(cluster, request.name, create)
    return detail(cluster, entry, "added")


def list_periodic_tasks(
    cluster: Cluster, request: ListPeriodicTasksInput
) -> ListPeriodicTasksResult:
    """A page of entries sorted by name, filtered by enabled and task name glob."""
    store = get_store(cluster)
    with translate_errors("broker"):
        every = store.read_all()
    entries = [
        e
        for e in every
        if (request.enabled is None or e.enabled == request.enabled)
        and (not request.task_name or fnmatch.fnmatchcase(e.task, request.task_name))
    ]
    page = entries[request.offset : request.offset + request.limit]
    end = request.offset + len(page)
    return ListPeriodicTasksResult(
        entries=[summary(cluster, e) for e in page],
        total=len(entries),
        next_offset=end if end < len(entries) else None,
    )


def get_periodic_task(cluster: Cluster, request: EntryNameInput) -> PeriodicTask:
    """One entry in full."""
    return detail(cluster, load_entry(cluster, request.name))


def _apply_update(
    cluster: Cluster,
    request: UpdatePeriodicTaskInput,
    entry: Entry,
    sched: BaseSchedule | None,
    now: datetime,
) -> list[str]:
    """Apply `request` to `entry` in place; return the names of what changed."""
    definition = entry.definition
    changed = []
    if sched is not None:
        finished = nominal_next(entry) is None
        definition["schedule"] = sched
        entry.last_run_at = now  # re-anchor: the new schedule counts from now
        changed.append("schedule")
        if finished and not entry.enabled:  # beat disabled it after its last run
            definition["enabled"] = True
            changed.append("enabled")
    for field, key in (("task_name", "task"), ("args", "args"), ("kwargs", "kwargs")):
        value = getattr(request, field)
        if value is not None and value != definition.get(key):
            definition[key] = value
            changed.append(field)
    options = _options(cluster, request, definition.get("options"))
    if options != (definition.get("options") or {}):
        definition["options"] = options
        changed.append("options")
    return changed


def update_periodic_task(cluster: Cluster, request: UpdatePeriodicTaskInput) -> PeriodicTask:
    """Change what the request names on the entry as stored when it is written."""
    now = _now()
    schedule_given = any(getattr(request, k) is not None for k in ("every", "crontab", "run_at"))
    sched = build_schedule(request, cluster.app, now) if schedule_given else None
    changes: list[str] = []
    unchanged: list[Entry] = []
    checked: list[Any] = []

    def change(stored: Entry | None) -> Write | None:
        stored = _existing(request.name, stored)
        changes[:] = _apply_update(cluster, request, stored, sched, now)
        if not changes:
            unchanged.append(stored)
            return None
        call = (stored.task, stored.definition.get("args"), stored.definition.get("kwargs"))
        if call not in checked:  # the same task and arguments are checked once
            _checked_task(cluster, stored, validate=request.validate_args)
            checked.append(call)
        stored.extra["updated_at"] = now.isoformat()
        return scored(stored)

    entry = _update(cluster, request.name, change)
    if entry is None:
        return detail(cluster, unchanged[-1], "nothing to change")
    return detail(cluster, entry, f"updated {', '.join(changes)}")


def _set_enabled(cluster: Cluster, name: str, enabled: bool) -> PeriodicTask:
    now = _now()
    unchanged: list[Entry] = []

    def change(stored: Entry | None) -> Write | None:
        stored = _existing(name, stored)
        if stored.enabled == enabled:
            unchanged.append(stored)
            return None
        if enabled:
            _checked_task(cluster, stored, validate=False)
            due = nominal_next(stored)
            if due is None:
                raise InvalidArgument(
                    f"periodic task {name!r} is a one-off that already ran",
                    hint="give it a new run_at with update_periodic_task",
                )
            if stored.last_run_at is None or due <= now:  # runs missed while off: not replayed
                stored.last_run_at = now
        stored.definition["enabled"] = enabled
        stored.extra["updated_at"] = now.isoformat()
        return scored(stored)

    entry = _update(cluster, name, change)
    if entry is None:
        return detail(cluster, unchanged[-1], f"already {'enabled' if enabled else 'disabled'}")
    return detail(cluster, entry, "enabled" if enabled else "disabled")


def enable_periodic_task(cluster: Cluster, request: EntryNameInput) -> PeriodicTask:
    """Let beat run the entry again from its next due time."""
    return _set_enabled(cluster, request.name, True)


def disable_periodic_task(cluster: Cluster, request: EntryNameInput) -> PeriodicTask:
    """Keep the entry but stop beat from running it."""
    return _set_enabled(cluster, request.name, False)


def remove_periodic_task(
    cluster: Cluster, request: RemovePeriodicTaskInput
) -> RemovePeriodicTaskResult:
    """Delete an entry (a dry run unless confirmed)."""
    entry = load_entry(cluster, request.name)
    sched = describe(entry.schedule, cluster.app).text
    what = f"{request.name!r} ({entry.task}, {sched})"
    if not request.confirm:
        return RemovePeriodicTaskResult(
            name=request.name,
            executed=False,
            message=f"would remove {what}; call again with confirm=true",
        )
    with translate_errors("broker"):
        get_store(cluster).remove(request.name)
    return RemovePeriodicTaskResult(name=request.name, executed=True, message=f"removed {what}")


def run_periodic_task_now(cluster: Cluster, request: EntryNameInput) -> RunPeriodicTaskNowResult:
    """Send one extra run of an entry now; its schedule and run count stay as they are."""
    entry = load_entry(cluster, request.name)
    args = entry.definition.get("args") or []
    kwargs = entry.definition.get("kwargs") or {}
    ensure_sendable(cluster, entry.task, args, kwargs, validate=False)
    task_id = f"{request.name}:now-{uuid.uuid4().hex[:12]}"
    with translate_errors("broker"):
        cluster.app.send_task(
            entry.task,
            args=args,
            kwargs=kwargs,
            task_id=task_id,
            retry=True,
            **{**entry.options, **reply_options(cluster.app)},
        )
    return RunPeriodicTaskNowResult(
        name=request.name,
        task_id=task_id,
        task_name=entry.task,
        message="sent now; schedule unchanged",
    )
