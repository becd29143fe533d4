"""`skill.scheduler()`: periodic tasks in the schedule store, run by `celery-mcp beat`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery.schedules import crontab as celery_crontab

from celery_mcp.errors import InvalidArgument
from celery_mcp.interfaces.facade.arguments import aware, seconds
from celery_mcp.interfaces.facade.types import Call, Result
from celery_mcp.models.schedules import Crontab
from celery_mcp.service import schedule_rules

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill


def schedule_fields(schedule: Any) -> dict[str, Any]:
    """The every / crontab / run_at field that the seed's one `schedule` argument means.

    Seconds or a timedelta: every; `crontab(...)` (ours or Celery's) or a 5-field string:
    crontab; a datetime (naive: local time): run_at.
    """
    if isinstance(schedule, bool):
        raise InvalidArgument(f"schedule={schedule!r} is not a schedule")
    if isinstance(schedule, int | float | timedelta):
        return {"every": seconds(schedule)}
    if isinstance(schedule, Crontab | str):
        return {"crontab": schedule}
    if isinstance(schedule, celery_crontab):
        names = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        return {"crontab": {n: str(getattr(schedule, f"_orig_{n}")) for n in names}}
    if isinstance(schedule, datetime):
        return {"run_at": aware(schedule)}
    raise InvalidArgument(
        f"schedule={schedule!r} is not a schedule",
        hint="give seconds (30.0), a timedelta, scheduler().crontab(...), a cron string or "
        "a datetime",
    )


class Scheduler:
    """Periodic tasks in the schedule store (run by `celery-mcp beat`).

    A schedule is `schedule=` (seconds, a timedelta, `crontab(...)`, a cron string or a
    datetime), or one of `every` (seconds, or {days, hours, minutes, seconds}), `crontab` (a
    5-field string or `crontab(...)`) and `run_at` (one run at a datetime).
    """

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    #: A validated crontab schedule to pass as `schedule=` (raises InvalidArgument).
    crontab = staticmethod(schedule_rules.crontab)

    def add_periodic_task(
        self,
        task_name: str,
        schedule: Any = None,
        name: str | None = None,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        every: Any = None,
        crontab: Any = None,
        run_at: datetime | None = None,
        **options: Any,
    ) -> Result:
        """Add an entry running `task_name` on `schedule` (or every/crontab/run_at), named
        `name` (default: the task name); options: queue, priority, expires_s, enabled,
        validate_args."""
        when = {"every": seconds(every), "crontab": crontab, "run_at": aware(run_at)}
        if schedule is not None:
            if any(v is not None for v in when.values()):
                raise InvalidArgument("give schedule= or one of every, crontab, run_at, not both")
            when = schedule_fields(schedule)
        return self._call(
            "add_periodic_task",
            name=name or task_name,
            task_name=task_name,
            args=args,
            kwargs=kwargs,
            **when,
            **options,
        )

    def list_periodic_tasks(self, **filters: Any) -> Result:
        """Entries with their schedules and next run; filters: enabled, task_name, offset, limit."""
        return self._call("list_periodic_tasks", **filters)

    def get_periodic_task(self, name: str) -> Result:
        """One entry in full."""
        return self._call("get_periodic_task", name=name)

    def update_periodic_task(self, name: str, schedule: Any = None, **changes: Any) -> Result:
        """Change an entry (task_name, args, kwargs, `schedule` or every/crontab/run_at,
        queue, priority, expires_s); fields left out stay as they are."""
        if schedule is not None:
            changes.update(schedule_fields(schedule))
        return self._call("update_periodic_task", name=name, **changes)

    def enable_periodic_task(self, name: str) -> Result:
        """Let beat run the entry again."""
        return self._call("enable_periodic_task", name=name)

    def disable_periodic_task(self, name: str) -> Result:
        """Keep the entry but stop beat from running it."""
        return self._call("disable_periodic_task", name=name)

    def remove_periodic_task(self, name: str, *, confirm: bool | None = None) -> Result:
        """Delete the entry (confirm=False: a dry run)."""
        return self._call("remove_periodic_task", name=name, confirm=confirm)

    def run_periodic_task_now(self, name: str) -> Result:
        """Send the entry's task once now, outside its schedule."""
        return self._call("run_periodic_task_now", name=name)
