"""What every path that publishes a task shares: the checks before, the options it is sent with.

send_task, each workflow step, each periodic entry and each retry call `ensure_sendable` first
(nothing is published when it raises) and send with `publish_options`.
"""

from __future__ import annotations

from typing import Any

from celery_mcp.errors import UnknownTask
from celery_mcp.models.tasks import TaskOptions
from celery_mcp.service.catalog import check_arguments
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import is_known_task
from celery_mcp.service.limits import check_payload
from celery_mcp.service.policy import check_task_allowed
from celery_mcp.stores.keys import RETRIES_HEADER, RETRY_DELAY_HEADER, RETRY_DELAY_MAX_HEADER


def retry_headers(retries: int, delay_s: float, delay_max_s: float) -> dict[str, Any]:
    """Message headers asking a celery-mcp worker for up to `retries` retries with backoff."""
    return {
        RETRIES_HEADER: retries,
        RETRY_DELAY_HEADER: delay_s,
        RETRY_DELAY_MAX_HEADER: delay_max_s,
    }


def publish_options(opts: TaskOptions) -> dict[str, Any]:
    """Celery `apply_async` options for `opts`: routing, delays, retry headers.

    `retry=True` applies the app's `task_publish_retry_policy`; client apps set it to no retry
    (see `app.bounded_config`), so a broker that does not answer fails the call at once.
    """
    options: dict[str, Any] = {"retry": True}
    for key in ("countdown", "eta", "expires", "queue", "priority"):
        value = getattr(opts, key)
        if value is not None:
            options[key] = value
    if opts.retries:
        options["headers"] = retry_headers(opts.retries, opts.retry_delay_s, opts.retry_delay_max_s)
    return options


def ensure_sendable(
    cluster: Cluster, name: str, args: Any, kwargs: Any, *, validate: bool = True
) -> None:
    """Raise when `name` is not allowed or unknown, or args/kwargs exceed the caps or do not
    fit its signature; nothing is sent. `validate=False` skips the signature check (tasks with
    dynamic signatures)."""
    s = cluster.settings
    check_task_allowed(s, name)
    check_payload(args, kwargs, max_bytes=s.max_payload_bytes, max_depth=s.max_depth)
    if not is_known_task(cluster, name):
        raise UnknownTask(
            f"unknown task {name!r}: no live worker and no imported app registers it",
            hint="check the name with list_task_types or the workers with health",
        )
    if validate:
        check_arguments(cluster, name, args, kwargs)
