"""`skill.scheduler()`: periodic tasks in the schedule store, run by `celery-mcp beat`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery_mcp.interfaces.facade.types import Call, Result
from celery_mcp.service import schedule_rules

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill


class Scheduler:
    """Periodic tasks in the schedule store (run by `celery-mcp beat`).

    A schedule is one of `every` (seconds, or {days, hours, minutes, seconds}), `crontab` (a
    5-field string or `crontab(...)`) or `run_at` (one run at an aware datetime).
    """

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    #: A validated crontab schedule to pass as `crontab=` (raises InvalidArgument).
    crontab = staticmethod(schedule_rules.crontab)

    def add_periodic_task(
        self,
        name: str,
        task_name: str,
        *,
        every: Any = None,
        crontab: Any = None,
        run_at: Any = None,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Result:
        """Add entry `name` running `task_name` on a schedule; options: queue, priority,
        expires_s, enabled, validate_args."""
        return self._call(
            "add_periodic_task",
            name=name,
            task_name=task_name,
            every=every,
            crontab=crontab,
            run_at=run_at,
            args=args,
            kwargs=kwargs,
            **options,
        )

    def list_periodic_tasks(self, **filters: Any) -> Result:
        """Entries with their schedules and next run; filters: enabled, task_name, offset, limit."""
        return self._call("list_periodic_tasks", **filters)

    def get_periodic_task(self, name: str) -> Result:
        """One entry in full."""
        return self._call("get_periodic_task", name=name)

    def update_periodic_task(self, name: str, **changes: Any) -> Result:
        """Change an entry; fields left out stay as they are."""
        return self._call("update_periodic_task", name=name, **changes)

    def enable_periodic_task(self, name: str) -> Result:
        """Let beat run the entry again."""
        return self._call("enable_periodic_task", name=name)

    def disable_periodic_task(self, name: str) -> Result:
        """Keep the entry but stop beat from running it."""
        return self._call("disable_periodic_task", name=name)

    def remove_periodic_task(self, name: str, *, confirm: bool = False) -> Result:
        """Delete the entry (a dry run unless confirm=True)."""
        return self._call("remove_periodic_task", name=name, confirm=confirm)

    def run_periodic_task_now(self, name: str) -> Result:
        """Send the entry's task once now, outside its schedule."""
        return self._call("run_periodic_task_now", name=name)
