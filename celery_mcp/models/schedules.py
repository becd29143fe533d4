"""Models of the `schedules` toolset: periodic tasks in the RedBeat store, run by `celery-mcp beat`.

A schedule is exactly one of `every` (seconds, or {days, hours, minutes, seconds}), `crontab`
(a 5-field string or its fields) or `run_at` (one run at a time). Crontab fields are read in
the cluster timezone (setting CELERY_MCP_TIMEZONE, default UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, Field

from celery_mcp.models.common import Json, Model, QueueName, TaskName

EntryName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$",
        description="Periodic task name, unique in the store, e.g. 'nightly-report'.",
    ),
]


def _int_as_text(value: object) -> object:
    """A crontab field given as a number (`hour=2`) is its text, as in Celery's crontab."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


CronField = Annotated[
    str,
    BeforeValidator(_int_as_text),
    Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9*/,\-]+$"),
]


class Every(Model):
    """A timedelta-like interval; the parts add up (e.g. {"hours": 1, "minutes": 30})."""

    days: float = Field(0, ge=0, description="Days.")
    hours: float = Field(0, ge=0, description="Hours.")
    minutes: float = Field(0, ge=0, description="Minutes.")
    seconds: float = Field(0, ge=0, description="Seconds.")

    def total_seconds(self) -> float:
        return ((self.days * 24 + self.hours) * 60 + self.minutes) * 60 + self.seconds


class Crontab(Model):
    """Crontab fields (Celery semantics: day_of_month AND day_of_week must both match)."""

    minute: CronField = Field("*", description="0-59, e.g. '*/15' or '0,30'.")
    hour: CronField = Field("*", description="0-23.")
    day_of_week: CronField = Field("*", description="0-6 (0 = Sunday) or names, e.g. 'mon-fri'.")
    day_of_month: CronField = Field("*", description="1-31.")
    month_of_year: CronField = Field("*", description="1-12.")

    def expression(self) -> str:
        """The classic 5-field string: minute hour day_of_month month_of_year day_of_week."""
        return " ".join(
            (self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week)
        )


class ScheduleFields(Model):
    """When an entry runs: give exactly one of every, crontab, run_at."""

    every: float | Every | None = Field(
        None, description="Run every N seconds (>= 1), or every {days, hours, minutes, seconds}."
    )
    crontab: str | Crontab | None = Field(
        None,
        description="Cron string 'minute hour day_of_month month day_of_week' "
        "(e.g. '*/15 * * * 1-5') or its fields; in the cluster timezone.",
    )
    run_at: AwareDatetime | None = Field(
        None, description="Run once at this future time (ISO 8601 with timezone)."
    )


class EntryOptions(Model):
    """How each run is sent."""

    queue: QueueName | None = Field(None, description="Queue to send to (default: task routing).")
    priority: int | None = Field(
        None, ge=0, le=9, description="0-9, 9 served first (on every broker)."
    )
    expires_s: float | None = Field(
        None,
        gt=0,
        le=366 * 86_400,
        description="Discard a run not started this long after it fires.",
    )


class EntryNameInput(Model):
    """One periodic task by name."""

    name: EntryName


class NewEntry(Model):
    """What a new entry runs."""

    name: EntryName
    task_name: TaskName
    args: list[Json] = Field(default_factory=list, description="Positional arguments (JSON).")
    kwargs: dict[str, Json] = Field(default_factory=dict, description="Keyword arguments (JSON).")


class AddPeriodicTaskInput(EntryOptions, ScheduleFields, NewEntry):
    """Add one periodic task."""

    enabled: bool = Field(True, description="False stores it without running it.")
    validate_args: bool = Field(
        True, description="Check args/kwargs against the task's signature first."
    )


class UpdatePeriodicTaskInput(EntryOptions, ScheduleFields, EntryNameInput):
    """Change an entry; fields left out stay as they are."""

    task_name: TaskName | None = Field(None, description="New task name.")
    args: list[Json] | None = Field(None, description="New positional arguments.")
    kwargs: dict[str, Json] | None = Field(None, description="New keyword arguments.")
    validate_args: bool = Field(True, description="Check args/kwargs against the task's signature.")


class RemovePeriodicTaskInput(Model):
    """Remove one periodic task."""

    name: EntryName
    confirm: bool = Field(False, description="Required to remove; without it, a dry run.")


class ListPeriodicTasksInput(Model):
    """List periodic tasks, sorted by name."""

    enabled: bool | None = Field(None, description="Only enabled (true) or disabled (false) ones.")
    task_name: str | None = Field(
        None, max_length=255, description="Only entries of this task; glob allowed ('demo.*')."
    )
    offset: int = Field(0, ge=0, description="Skip this many (next_offset of the previous page).")
    limit: int = Field(50, ge=1, le=500, description="Page size.")


class ScheduleInfo(Model):
    """An entry's schedule."""

    kind: Literal["every", "crontab", "once", "other"]
    every_s: float | None = Field(None, description="Interval in seconds (kind every).")
    crontab: str | None = Field(
        None, description="'minute hour day_of_month month day_of_week' (kind crontab)."
    )
    run_at: datetime | None = Field(None, description="The one run's time (kind once).")
    timezone: str = Field(description="Timezone crontab fields are read in.")
    text: str = Field(description="Human summary.")


EntryState = Literal["scheduled", "disabled", "finished"]


class PeriodicTaskSummary(Model):
    """One periodic task, in short."""

    name: str
    task_name: str
    enabled: bool
    state: EntryState = Field(description="finished: a one-off that ran, or nothing left to run.")
    schedule: ScheduleInfo
    next_run_at: datetime | None = Field(None, description="Next due time (None: none).")
    last_run_at: datetime | None = Field(
        None, description="Due time of the last run (or when the entry was stored/re-anchored)."
    )
    total_run_count: int = Field(
        description="Runs beat published (run_periodic_task_now excluded; a claimed run "
        "counts once its publish succeeded)."
    )


class UnsentRun(Model):
    """A run beat claimed and has not yet published: re-sent under its task id until its
    deadline, then recorded as missed."""

    task_id: str = Field(description="The run's task id (it keeps it on every attempt).")
    due_at: datetime = Field(description="When the run was due.")
    deadline: datetime = Field(
        description="Last time it may be sent: the next run's due time, or expires_s after "
        "the claim, whichever is sooner."
    )
    attempts: int = Field(description="Publishes started so far.")
    last_error: str | None = Field(None, description="Why the last publish failed.")


class MissedRun(Model):
    """Due runs that were never published."""

    due_at: datetime = Field(description="Due time of the (first) missed run.")
    runs: int = Field(description="Due times this record covers, from due_at on.")
    task_id: str | None = Field(None, description="The claimed run's task id (never sent).")
    reason: str = Field(description="Why it was not sent.")
    recorded_at: datetime = Field(description="When beat recorded it missed.")


class PeriodicTask(PeriodicTaskSummary):
    """One periodic task, in full."""

    args: list[Json]
    kwargs: dict[str, Json]
    queue: str | None = None
    priority: int | None = None
    expires_s: float | None = None
    last_task_id: str | None = Field(
        None, description="Task id of the last run sent by celery-mcp beat (for get_result)."
    )
    last_fire_delay_ms: float | None = Field(
        None, description="How late after its due time that run was sent."
    )
    last_refusal: str | None = Field(
        None, description="Why beat did not send the last due run (then nothing was sent)."
    )
    last_send_attempts: int | None = Field(
        None,
        description="Publishes started for the last run sent; over 1: it was re-sent (after "
        "a failed publish or a beat crash), and a crash right after an earlier publish may "
        "have left a second copy under the same task id.",
    )
    unsent_run: UnsentRun | None = Field(
        None, description="A run claimed and not yet published (beat keeps trying)."
    )
    missed_runs: list[MissedRun] = Field(
        default_factory=list, description="The most recent missed runs, newest last."
    )
    missed_run_count: int = Field(0, description="Due runs never published, in all.")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    message: str | None = Field(
        None, description="What the call changed, when it changed something."
    )


class ListPeriodicTasksResult(Model):
    """A page of periodic tasks."""

    entries: list[PeriodicTaskSummary]
    total: int = Field(description="Entries matching the filters.")
    next_offset: int | None = Field(None, description="Pass as offset for the next page.")


class RemovePeriodicTaskResult(Model):
    """What remove did (or would do, without confirm)."""

    name: str
    executed: bool = Field(description="False on a dry run (no confirm).")
    message: str


class RunPeriodicTaskNowResult(Model):
    """One extra run sent now, outside the schedule."""

    name: str
    task_id: str = Field(description="Id for get_status / get_result.")
    task_name: str
    message: str
