"""Which workers are alive and which task names they know, fast and bounded.

Celery's `inspect()` waits its whole timeout unless it is told how many replies to expect
(`limit`). On a Redis broker every worker binds a queue `<hostname>.celery.pidbox` to the
`celery.pidbox` fanout exchange, and kombu records that binding in a set: its size is an upper
bound on live workers, so a healthy cluster answers as soon as every worker replied.
"""

from __future__ import annotations

import time
from typing import Any

from celery_mcp.errors import translate_errors
from celery_mcp.service.cluster import Cluster

PIDBOX_BINDINGS = "_kombu.binding.celery.pidbox"
WORKER_TASKS_TTL_S = 5.0


def expected_workers(cluster: Cluster) -> int | None:
    """Upper bound on live workers (Redis brokers), or None when it cannot be known."""
    if not cluster.broker_is_redis:
        return None
    with translate_errors("broker"):
        return int(cluster.broker_redis.scard(PIDBOX_BINDINGS))


def broadcast_inspect(
    cluster: Cluster,
    method: str,
    *,
    destination: list[str] | None = None,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """`inspect().<method>()` replies by hostname, returning as soon as all expected replied."""
    limit = len(destination) if destination else expected_workers(cluster)
    if limit == 0:
        return {}
    inspector = cluster.app.control.inspect(
        destination=destination,
        timeout=timeout_s or cluster.settings.inspect_timeout_s,
        limit=limit,
    )
    with translate_errors("broker"):
        replies = getattr(inspector, method)(**kwargs)
    return dict(replies or {})


def worker_task_names(cluster: Cluster, *, max_age_s: float = WORKER_TASKS_TTL_S) -> set[str]:
    """Task names registered on live workers (cached for `max_age_s`)."""
    now = time.monotonic()
    cached = cluster.cache.get("worker_tasks")
    if cached and now - cached[0] < max_age_s:
        return set(cached[1])
    replies = broadcast_inspect(cluster, "registered")
    names = {name for tasks in replies.values() for name in (tasks or [])}
    cluster.cache["worker_tasks"] = (now, names)
    return names


def known_task_names(cluster: Cluster) -> set[str]:
    """Every task name the imported app or a live worker knows."""
    return cluster.app_task_names() | worker_task_names(cluster)


def is_known_task(cluster: Cluster, name: str) -> bool:
    """True when the app or a live worker knows `name` (worker list refreshed once on a miss)."""
    if name in cluster.app_task_names() or name in worker_task_names(cluster):
        return True
    return name in worker_task_names(cluster, max_age_s=0.5)
