"""`skill.task_manager()`: send tasks, read their status and results, revoke them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery_mcp.interfaces.facade.types import Call, Result

if TYPE_CHECKING:
    from celery_mcp.interfaces.facade import CelerySkill


class TaskManager:
    """Tasks: send by name, status, bounded result wait, revoke; the task catalog."""

    def __init__(self, skill: CelerySkill) -> None:
        self._skill = skill
        self._call: Call = skill._call

    def send_task(
        self,
        task_name: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Result:
        """Send `task_name` with args/kwargs; options: countdown, eta, expires, queue, priority,
        retries, retry_delay_s, retry_delay_max_s, validate_args. Returns a dict with task_id."""
        return self._call("send_task", task_name=task_name, args=args, kwargs=kwargs, **options)

    def get_status(self, task_id: str) -> Result:
        """State and metadata of a task, without waiting."""
        return self._call("get_status", task_id=task_id)

    def get_result(self, task_id: str, timeout: float = 10.0) -> Result:
        """Wait up to `timeout` seconds; returns success, result, error, ready, status, ..."""
        return self._call("get_result", task_id=task_id, timeout_s=timeout)

    def revoke(
        self,
        task_id: str,
        *,
        terminate: bool = False,
        signal: str = "SIGTERM",
        confirm: bool = False,
    ) -> Result:
        """Revoke a task; terminate=True (with confirm=True) also kills it if running."""
        return self._call(
            "revoke", task_id=task_id, terminate=terminate, signal=signal, confirm=confirm
        )

    def list_task_types(self, pattern: str = "*", *, offset: int = 0, limit: int = 100) -> Result:
        """Task names the cluster can run (app and live workers), with signatures."""
        return self._call("list_task_types", pattern=pattern, offset=offset, limit=limit)

    def describe_task(self, task_name: str) -> Result:
        """How to call one task: docstring, parameters (JSON schema), queue, limits."""
        return self._call("describe_task", task_name=task_name)
