"""Task priority, with one meaning for the user on every broker: 0-9, 9 served first.

Brokers disagree: RabbitMQ (`x-max-priority`) serves the highest number first, while kombu's
Redis transport reads its priority sub-queues in `priority_steps` order, so on Redis/Valkey 0
is served first (measured). Every tool takes and shows the user's priority; on Redis it is
turned around (9 - p) on the way to the broker and back.
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
