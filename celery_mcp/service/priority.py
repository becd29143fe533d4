"""Task priority, with one meaning for the user on every broker: 0-9, 9 served first.

Brokers disagree: RabbitMQ (`x-max-priority`) serves the highest number first, while kombu's
Redis transport reads its priority sub-queues in `priority_steps` order, so on Redis/Valkey 0
is served first (measured). Every tool takes and shows the user's priority; on Redis it is
turned around (9 - p) on the way to the broker and back. RabbitMQ honours priority only on a
queue declared with `x-max-priority` (and caps it there): a send says when it will not.
"""

from __future__ import annotations

from celery_mcp.service.cluster import Cluster

HIGHEST = 9


def to_broker(cluster: Cluster, priority: int) -> int:
    """The priority Celery sends for the user's `priority` (9 = first)."""
    return HIGHEST - priority if cluster.broker_is_redis else priority


def from_broker(cluster: Cluster, priority: int) -> int:
    """The user's priority of a message the broker holds with `priority`."""
    return HIGHEST - priority if cluster.broker_is_redis else priority


def ignored_priority(cluster: Cluster, queue: str, priority: int) -> str | None:
    """Why RabbitMQ will not honour `priority` on `queue` as asked, or None."""
    if not cluster.broker_is_amqp:
        return None
    declared = cluster.app.amqp.queues.get(queue)
    arguments = (declared.queue_arguments if declared is not None else None) or {}
    most = arguments.get("x-max-priority") or cluster.app.conf.task_queue_max_priority
    if not most:
        return (
            f"priority ignored: queue {queue!r} has no x-max-priority, so RabbitMQ serves it "
            "in order (declare it with queue_arguments={'x-max-priority': 9}, or set "
            "task_queue_max_priority, on a queue that does not exist yet)"
        )
    if priority > int(most):
        return f"priority {priority} is above {queue!r}'s x-max-priority {most}: served as {most}"
    return None
