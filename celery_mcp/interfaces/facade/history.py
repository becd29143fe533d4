"""`skill.history()`: the recorded task history, and retries of failed tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery_mcp.interfaces.facade.types import Call, Result

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill


class History:
    """Task history recorded from Celery events (by `celery-mcp monitor` or `worker --monitor`)."""

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    def list_tasks(self, **filters: Any) -> Result:
        """Recorded tasks, newest first; filters: state (list), task_name, worker, queue,
        within_s, since, until, limit, cursor."""
        return self._call("list_tasks", **filters)

    def get_task(self, task_id: str) -> Result:
        """Everything known about one task: args, timeline, result or exception, links."""
        return self._call("get_task", task_id=task_id)

    def retry_task(self, task_id: str) -> Result:
        """Re-send a FAILURE or REVOKED task with its original name, args and queue."""
        return self._call("retry_task", task_id=task_id)

    def retry_failed(self, *, confirm: bool | None = None, **filters: Any) -> Result:
        """Re-send recent FAILURE tasks (task_name, within_s, max_tasks, ...); confirm=False:
        a dry run."""
        return self._call("retry_failed", confirm=confirm, **filters)
