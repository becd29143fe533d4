"""The cluster at a glance (`celery://cluster`): the health, queue and history models, together.

Each part is the very result of its tool (health, queue_lengths, list_tasks), so the resource
and the tools never disagree; a part whose toolset is not enabled is None and named in
`omitted`.
"""

from __future__ import annotations

from pydantic import Field

from celery_mcp.models.common import Model
from celery_mcp.models.health import HealthResult
from celery_mcp.models.history import ListTasksResult
from celery_mcp.models.workers import QueueLengthsResult


class ClusterOverview(Model):
    """Workers, beat and stores (health), queues with depths, and recent failures."""

    health: HealthResult = Field(description="What the health tool returns.")
    queues: QueueLengthsResult | None = Field(
        None, description="What queue_lengths returns; None when the workers toolset is off."
    )
    recent_failures: ListTasksResult | None = Field(
        None,
        description="What list_tasks(status=['FAILURE']) returns; None when the history "
        "toolset is off.",
    )
    omitted: list[str] = Field(
        default_factory=list, description="Parts left out, and the toolset each needs."
    )
