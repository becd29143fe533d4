"""Caller-chosen retries, the worker side: a `run` wrapper that honours the retry headers.

`send_task(retries=N, retry_delay_s=D, retry_delay_max_s=M)` adds three headers to the message
(`keys.RETRIES_HEADER` and the two delays; see `service.sending.retry_headers`). Workers started
with `celery-mcp worker` wrap every task's `run` (the way Celery's own `autoretry_for` does):
when the task raises and `request.retries < N`, it calls
`task.retry(countdown=min(D * 2**retries, M))`, so the state goes RETRY and the same task id
runs again; the headers travel with the retry. Workers started otherwise ignore the headers:
the task then runs once.
"""

from __future__ import annotations

import functools
from typing import Any

from celery.exceptions import Ignore, Reject, Retry

from celery_mcp.stores.keys import RETRIES_HEADER, RETRY_DELAY_HEADER, RETRY_DELAY_MAX_HEADER


def backoff_s(attempt: int, delay_s: float, delay_max_s: float) -> float:
    """Delay before retry number `attempt + 1`: delay doubled per attempt, capped."""
    return float(min(delay_s * (2**attempt), delay_max_s))


def _header(request: Any, key: str) -> Any:
    headers = getattr(request, "headers", None) or {}
    return headers.get(key, getattr(request, key, None))


def wrap_task(task: Any) -> None:
    """Make `task` honour the retry headers (idempotent)."""
    if getattr(task, "_mcp_retry_wrapped", False):
        return
    original = task.run

    @functools.wraps(original)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except (Retry, Ignore, Reject):  # the task decided what happens next
            raise
        except Exception as exc:
            request = task.request
            limit = _header(request, RETRIES_HEADER)
            attempt = int(request.retries or 0)
            if not limit or attempt >= int(limit):
                raise
            delay = backoff_s(
                attempt,
                float(_header(request, RETRY_DELAY_HEADER) or 1.0),
                float(_header(request, RETRY_DELAY_MAX_HEADER) or 600),
            )
            raise task.retry(exc=exc, countdown=delay, max_retries=int(limit)) from exc

    task.run = run
    task._mcp_retry_wrapped = True


#: Celery's own tasks that run user tasks in one message: a chunk of map_task(chunk_size=)
#: retries as a whole (its items run inside it, so their own requests carry no headers).
RETRYABLE_BUILTINS = ("celery.starmap", "celery.map", "celery.chunks")


def install(app: Any) -> None:
    """Wrap every task registered on `app` (call in the worker after tasks are imported)."""
    app.loader.import_default_modules()
    for name, task in list(app.tasks.items()):
        if not name.startswith("celery.") or name in RETRYABLE_BUILTINS:
            wrap_task(task)
