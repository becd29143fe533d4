"""Schedule rules (pure): build, check and describe schedules, and compute due times.

Every N seconds (celery `schedule`), crontab (celery `crontab`, read in the app's timezone) and
once at a time (RedBeat `rrule`, count=1). Next due times are computed in UTC arithmetic, so a
DST change shifts nothing by an hour; `celery-mcp beat` and the schedules tools share them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from celery import Celery
from celery.schedules import BaseSchedule
from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as every_schedule

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.schedules import Crontab, Every, ScheduleFields, ScheduleInfo

MIN_EVERY_S = 1.0
MAX_EVERY_S = 366 * 86_400.0
SKIPPED_SCAN_MAX = 1_000  # coalesced crontab runs counted one by one up to this many
ONE_OFF_DEADLINE_S = 3_600.0  # a claimed one-off run is re-sent for up to this long
CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day_of_week", "0-6 (0 = Sunday) or sun-sat"),
    ("day_of_month", "1-31"),
    ("month_of_year", "1-12"),
)


def _crontab_error(field: str, value: str, detail: str) -> InvalidArgument:
    expected = dict(CRON_FIELDS)[field]
    return InvalidArgument(
        f"crontab {field}={value!r} is invalid ({detail}); expected {expected}, "
        "a list '1,2', a range '1-5' or a step '*/15'",
        hint="e.g. crontab='*/15 * * * 1-5' (minute hour day_of_month month day_of_week)",
    )


def parse_crontab_string(text: str) -> Crontab:
    """'m h dom mon dow' -> Crontab fields (raises InvalidArgument on the wrong field count)."""
    parts = text.split()
    if len(parts) != 5:
        raise InvalidArgument(
            f"crontab {text!r} has {len(parts)} fields; expected 5: "
            "minute hour day_of_month month_of_year day_of_week",
            hint="e.g. '*/15 * * * 1-5' (every 15 minutes on weekdays); no seconds, no @macros",
        )
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        return Crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except ValueError:
        bad = next(p for p in parts if not all(c.isalnum() or c in "*/,-" for c in p))
        raise InvalidArgument(
            f"crontab {text!r}: field {bad!r} has characters other than digits, names, * / , -",
            hint="e.g. '*/15 * * * 1-5'",
        ) from None


def crontab_schedule(fields: Crontab, app: Celery | None = None) -> celery_crontab:
    """Celery's crontab for `fields`, validated field by field (raises InvalidArgument)."""
    values = fields.model_dump()
    for field, _ in CRON_FIELDS:
        try:
            celery_crontab(**{field: values[field]})
        except ValueError as exc:
            raise _crontab_error(field, values[field], str(exc)) from None
    try:
        return celery_crontab(**values, app=app)
    except ValueError as exc:
        raise InvalidArgument(
            str(exc), hint="pick a day_of_month that exists in those months"
        ) from None


def crontab(
    minute: str | int = "*",
    hour: str | int = "*",
    day_of_week: str | int = "*",
    day_of_month: str | int = "*",
    month_of_year: str | int = "*",
) -> Crontab:
    """A validated crontab schedule (pass it as `schedule=` or `crontab=`); numbers or text
    per field, as in Celery's crontab; raises InvalidArgument when bad."""
    try:
        fields = Crontab.model_validate(
            {
                "minute": minute,
                "hour": hour,
                "day_of_week": day_of_week,
                "day_of_month": day_of_month,
                "month_of_year": month_of_year,
            }
        )
    except ValueError as exc:
        raise InvalidArgument(
            f"crontab fields: {exc}", hint="e.g. crontab(minute='*/15')"
        ) from None
    crontab_schedule(fields)
    return fields


def every_seconds(every: float | Every) -> float:
    """Interval in seconds, checked against the allowed range."""
    if isinstance(every, Every):
        seconds, shown = every.total_seconds(), json.dumps(every.model_dump(exclude_defaults=True))
    else:
        seconds = float(every)
        shown = f"{seconds:g}"
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise InvalidArgument(
            f"every={shown} is {seconds:g} s; expected {MIN_EVERY_S:g} s to 366 days",
            hint="e.g. every=30 or every={'minutes': 5}",
        )
    return seconds


def build_schedule(spec: ScheduleFields, app: Celery, now: datetime) -> BaseSchedule:
    """The celery/RedBeat schedule object for exactly one of every, crontab, run_at."""
    given = [k for k in ("every", "crontab", "run_at") if getattr(spec, k) is not None]
    if len(given) != 1:
        raise InvalidArgument(
            f"give exactly one of every, crontab, run_at (got {', '.join(given) or 'none'})",
            hint="every=60, crontab='0 9 * * 1-5' or run_at='2030-01-01T09:00:00Z'",
        )
    if spec.every is not None:
        return every_schedule(timedelta(seconds=every_seconds(spec.every)), app=app)
    if spec.crontab is not None:
        fields = spec.crontab
        if isinstance(fields, str):
            fields = parse_crontab_string(fields)
        return crontab_schedule(fields, app)
    assert spec.run_at is not None
    at = spec.run_at.astimezone(UTC)
    if at.microsecond:  # RedBeat stores whole seconds
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    if at <= now:
        raise InvalidArgument(
            f"run_at {spec.run_at.isoformat()} is in the past (now {now.isoformat()})",
            hint="give a future time, or use send_task to run it now",
        )
    from redbeat.schedules import rrule  # 0.2 s (it imports celery.beat): only for schedules

    return rrule("SECONDLY", dtstart=at, count=1, app=app)


def _round_s(dt: datetime) -> datetime:
    return (dt + timedelta(microseconds=500_000)).replace(microsecond=0)


def _celery_next(sched: BaseSchedule, after: datetime) -> datetime | None:
    now = sched.now().astimezone(UTC)  # add in UTC: local wall-clock addition breaks at DST
    remaining = sched.remaining_estimate(after)
    if remaining is None:
        return None
    due: datetime = _round_s(now + remaining)  # crontab and rrule fall on whole seconds
    return due


def next_due(sched: BaseSchedule, last_run_at: datetime) -> datetime | None:
    """The first due time after `last_run_at` (UTC), or None when there is none.

    Celery's crontab answers a time before `last_run_at` inside the hour a DST change repeats
    (it loses the `fold`), which would make beat fire on every tick for that hour; such an
    answer is replaced by the next one after the repeated hour.
    """
    last = last_run_at.astimezone(UTC)
    if isinstance(sched, every_schedule):
        step: timedelta = sched.run_every
        return last + step
    due = _celery_next(sched, last)
    if due is not None and due <= last:
        due = _celery_next(sched, last + timedelta(hours=1))
    return due


def advance(sched: BaseSchedule, last_run_at: datetime, now: datetime) -> tuple[datetime, datetime]:
    """For a due entry: (the due time being fired, the new last_run_at).

    The new last_run_at is the due time itself (no drift), unless the next one is already past
    (beat was down): then it is `now`, so missed runs are coalesced into this one.
    """
    due = next_due(sched, last_run_at) or now
    due = min(due, now)
    following = next_due(sched, due)
    new_last = due if following is not None and following > now else now
    return due, new_last


def skipped_runs(
    sched: BaseSchedule, due: datetime, now: datetime, limit: int = SKIPPED_SCAN_MAX
) -> tuple[int, datetime | None]:
    """(how many, the first) due times after `due` and at or before `now`: the runs `advance`
    coalesced into the one due at `due`. Counted up to `limit` (a crontab is walked)."""
    if isinstance(sched, every_schedule):
        step = sched.run_every.total_seconds()
        count = int((now - due).total_seconds() // step) if step > 0 else 0
        return count, (due + sched.run_every if count else None)
    found, first, at = 0, None, due
    while found < limit:
        nxt = next_due(sched, at)
        if nxt is None or nxt > now:
            break
        found, first, at = found + 1, first or nxt, nxt
    return found, first


def run_deadline(
    following: datetime | None, claimed_at: datetime, expires_s: float | None
) -> datetime:
    """Until when a claimed run may still be published: its next run's due time (one
    interval) or its `expires_s` after the claim, whichever is sooner. A one-off has no next
    run: ONE_OFF_DEADLINE_S, or its `expires_s`."""
    limits = [following or claimed_at + timedelta(seconds=ONE_OFF_DEADLINE_S)]
    if expires_s is not None:
        limits.append(claimed_at + timedelta(seconds=expires_s))
    return min(limits)


def run_task_id(name: str, due: datetime) -> str:
    """Deterministic task id of a run, e.g. 'report:20261125T090000.000Z' (name:due time)."""
    stamp = due.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{name}:{stamp}Z"


def is_one_off(sched: BaseSchedule) -> bool:
    """True for the one-run rrule that `run_at` stores."""
    from redbeat.schedules import rrule  # 0.2 s (it imports celery.beat): only for schedules

    return isinstance(sched, rrule) and sched.count == 1


def tz_name(app: Celery) -> str:
    return str(app.conf.timezone or "UTC")


def describe(sched: BaseSchedule, app: Celery) -> ScheduleInfo:
    """Agent-facing description of a schedule object."""
    zone = tz_name(app)
    if isinstance(sched, every_schedule):
        secs = sched.run_every.total_seconds()
        return ScheduleInfo(kind="every", every_s=secs, timezone=zone, text=f"every {secs:g} s")
    if isinstance(sched, celery_crontab):
        expr = " ".join(
            str(v)
            for v in (
                sched._orig_minute,
                sched._orig_hour,
                sched._orig_day_of_month,
                sched._orig_month_of_year,
                sched._orig_day_of_week,
            )
        )
        return ScheduleInfo(
            kind="crontab", crontab=expr, timezone=zone, text=f"crontab {expr} ({zone})"
        )
    if is_one_off(sched):
        at = sched.dtstart.astimezone(app.timezone)
        return ScheduleInfo(kind="once", run_at=at, timezone=zone, text=f"once at {at.isoformat()}")
    return ScheduleInfo(kind="other", timezone=zone, text=repr(sched))
