"""Remote-control commands `celery-mcp worker` adds to Celery's control panel.

`mcp_time_limit`: Celery's own `time_limit` command sets a task's limits, but the request class
a worker builds per task type reads them once, when it builds its task strategies; so with
Celery 5.7 the new limits apply only after the next `pool_restart` (measured: a 4 s task ran to
the end under a 1 s hard limit, and was killed after 1.05 s once the pool restarted). This
command sets the limits and rebuilds the strategies, as `pool_restart` does, without touching
the pool: the next task started runs under them. A plain `celery worker` does not know it and
replies with an error; the service then falls back to `time_limit` and says so.
"""

from __future__ import annotations

from typing import Any

from celery.worker.control import control_command, time_limit

from celery_mcp.models.workers import TIME_LIMIT_COMMAND


@control_command(  # type: ignore[untyped-decorator]
    name=TIME_LIMIT_COMMAND,
    args=[("task_name", str), ("soft", float), ("hard", float)],
    signature="<task_name> [soft_secs] [hard_secs]",
)
def mcp_time_limit(
    state: Any, task_name: str | None = None, hard: float | None = None, soft: float | None = None
) -> dict[str, Any]:
    """Set a task's time limits and apply them to the next task started (celery-mcp)."""
    reply: dict[str, Any] = time_limit(state, task_name=task_name, hard=hard, soft=soft)
    if "ok" in reply:
        state.consumer.update_strategies()
        reply = {"ok": "time limits set; they apply to the next task started"}
    return reply
