"""Remote-control commands `celery-mcp worker` adds to Celery's control panel.

Importing this module registers them in Celery's control panel (the registry every worker's
pidbox dispatches from), so they work on any broker with broadcast. A plain `celery worker`
does not know them and replies with an error; the service then falls back (catalog: the task
names from `registered`, signatures unknown; time limits: Celery's own `time_limit`).

- `keys.SPECS_COMMAND` (inspect): the worker's task signatures, `{"version": SPECS_VERSION,
  "tasks": {name: TaskSpec}}` as JSON, computed once per process (a worker's tasks do not change
  while it runs), so the server can describe and check the tasks only workers have.
- `keys.TIME_LIMIT_COMMAND` (control): Celery's own `time_limit` command sets a task's limits,
  but the request class a worker builds per task type reads them once, when it builds its task
  strategies; so with Celery 5.7 the new limits apply only after the next `pool_restart`
  (measured: a 4 s task ran to the end under a 1 s hard limit, and was killed after 1.05 s once
  the pool restarted). This command sets the limits and rebuilds the strategies, as
  `pool_restart` does, without touching the pool: the next task started runs under them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.worker.control import control_command, inspect_command, time_limit

from celery_mcp.service.signatures import task_spec
from celery_mcp.stores.keys import SPECS_COMMAND, SPECS_VERSION, TIME_LIMIT_COMMAND

log = logging.getLogger("celery_mcp.worker")

_lock = threading.Lock()
_specs: dict[int, dict[str, Any]] = {}


def task_specs(app: Any) -> dict[str, Any]:
    """name -> TaskSpec as JSON for every task of `app` (not `celery.*`), computed once."""
    with _lock:
        if id(app) not in _specs:
            app.loader.import_default_modules()
            specs: dict[str, Any] = {}
            for name, task in sorted(app.tasks.items()):
                if name.startswith("celery."):
                    continue
                try:
                    specs[name] = task_spec(task).model_dump(mode="json", exclude_defaults=True)
                except Exception:  # one odd task must not hide the others
                    log.warning("cannot describe task %s", name, exc_info=True)
                    specs[name] = None
            _specs[id(app)] = specs
        return _specs[id(app)]


@inspect_command(name=SPECS_COMMAND, args=[("names", list)], signature="[names]")  # type: ignore[untyped-decorator]
def mcp_task_specs(state: Any, names: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Signatures, docs and options of this worker's tasks (celery-mcp)."""
    specs = task_specs(state.app)
    if names:
        wanted = set(names)
        specs = {n: s for n, s in specs.items() if n in wanted}
    return {"version": SPECS_VERSION, "tasks": specs}


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
