"""The `mcp_task_specs` remote-control command: a worker tells the server its task signatures.

`celery-mcp worker` imports this module, which registers the command in Celery's control panel
(the registry every worker's pidbox dispatches from), so it works on any broker with broadcast
and always reflects the live workers. The reply is `{"version": 1, "tasks": {name: TaskSpec}}`
as JSON, computed once per process (a worker's tasks do not change while it runs). A plain
`celery worker` does not know the command and replies with an error: its tasks are listed by
the catalog with "signature unknown".
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.worker.control import inspect_command

from celery_mcp.service.signatures import SPECS_COMMAND, task_spec

log = logging.getLogger("celery_mcp.worker_control")
SPECS_VERSION = 1

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
