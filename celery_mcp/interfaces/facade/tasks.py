"""`skill.task_manager()`: send tasks, read their status and results, revoke them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery_mcp.interfaces.facade.arguments import aware, seconds
from celery_mcp.interfaces.facade.types import Call, Result

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill


class TaskManager:
    """Tasks: send by name, status, bounded result wait, revoke; the task catalog."""

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    def send_task(
        self,
        task_name: str,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        retries: int | None = None,
        retry_delay: float | timedelta | None = None,
        **options: Any,
    ) -> Result:
        """Send `task_name`; returns a dict with `task_id` and `status` at once.

        `countdown` (seconds or timedelta) or `eta` (a naive datetime is local time) delays
        it; `expires` (seconds, timedelta or datetime) discards it if not started by then;
        `retries` with `retry_delay` (the first delay, doubled each retry: 10, 20, 40, ...)
        re-runs it on failure (celery-mcp workers); `wait_s=N` also waits up to N seconds for
        the result (in `outcome`); other options: retry_delay_max_s, validate_args.
        """
        return self._call(
            "send_task",
            task_name=task_name,
            args=args,
            kwargs=kwargs,
            countdown=seconds(countdown),
            eta=aware(eta),
            expires=aware(seconds(expires)),
            queue=queue,
            priority=priority,
            retries=retries,
            retry_delay_s=seconds(retry_delay),
            **options,
        )

    def get_status(self, task_id: str) -> Result:
        """A task's `status` and metadata (name, args, worker, retries), without waiting."""
        return self._call("get_status", task_id=task_id)

    def get_result(self, task_id: str, timeout: float = 0.0) -> Result:
        """Wait up to `timeout` seconds (default: do not wait) for the outcome: `ready`,
        `status`, `success`, `result`, `error`, `traceback`, `timed_out`."""
        return self._call("get_result", task_id=task_id, timeout_s=timeout)

    def revoke(
        self,
        task_id: str,
        terminate: bool = False,
        signal: str = "SIGTERM",
        *,
        confirm: bool | None = None,
    ) -> Result:
        """Revoke a task; terminate=True also kills it if running (confirm=False: a dry run)."""
        return self._call(
            "revoke", task_id=task_id, terminate=terminate, signal=signal, confirm=confirm
        )

    def list_task_types(self, pattern: str = "*", *, offset: int = 0, limit: int = 100) -> Result:
        """Task names the cluster can run (app and live workers), with signatures."""
        return self._call("list_task_types", pattern=pattern, offset=offset, limit=limit)

    def describe_task(self, task_name: str) -> Result:
        """How to call one task: docstring, parameters (JSON schema), queue, limits."""
        return self._call("describe_task", task_name=task_name)
