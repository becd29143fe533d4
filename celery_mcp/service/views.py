"""Read-only views of the cluster (the MCP server's resources), each one registry operation.

A view is a URI (or an RFC 6570 template with `{variable}`s) and the read-only operation that
computes it, so a resource and its tool return the same model from the same code, through the
same funnel (`funnel.prepare`: read-only mode and toolsets apply once). A view of a toolset
that is not enabled is not offered. `celery://cluster` is the one composite: the results of
health, queue_lengths and list_tasks(status=['FAILURE']) side by side (`ClusterOverview`).

Listing views reads nothing (no broadcast per list); reading one is bounded like the calls it
makes. Template variables say which completion source (`suggestions.Kind`) fills them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from celery_mcp.config import Settings
from celery_mcp.errors import InvalidArgument
from celery_mcp.models.cluster import ClusterOverview
from celery_mcp.models.health import HealthResult
from celery_mcp.models.history import ListTasksResult
from celery_mcp.models.workers import QueueLengthsResult
from celery_mcp.service.funnel import Call, prepare
from celery_mcp.service.policy import offers
from celery_mcp.service.registry import OPERATIONS

#: What fills a template variable or a prompt argument (see `suggestions`).
Kind = Literal["task_name", "queue", "worker", "schedule", "task_id"]

CLUSTER_URI = "celery://cluster"


@dataclass(frozen=True)
class Part:
    """One operation a view runs, with its fixed inputs."""

    operation: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def toolset(self) -> str:
        return OPERATIONS[self.operation].toolset


@dataclass(frozen=True)
class View:
    """One resource (or resource template) and the operation(s) behind it."""

    uri: str
    name: str
    title: str
    description: str
    #: the operations, by the field of the result they fill ("" for a view of one operation)
    parts: Mapping[str, Part]
    #: template variable -> (input field of the operation, completion kind)
    variables: Mapping[str, tuple[str, Kind]] = field(default_factory=dict)

    @property
    def is_template(self) -> bool:
        return bool(self.variables)

    @property
    def main(self) -> Part:
        return self.parts.get("", None) or next(iter(self.parts.values()))


def _one(operation: str, **fields: Any) -> dict[str, Part]:
    return {"": Part(operation, fields)}


VIEWS: tuple[View, ...] = (
    View(
        CLUSTER_URI, "cluster", "The cluster at a glance",
        "Workers, beat and stores (health), queues with depths (queue_lengths) and the 10 "
        "newest failures (list_tasks status=FAILURE), in one read.",
        {
            "health": Part("health", {"include_workers": True}),
            "queues": Part("queue_lengths"),
            "recent_failures": Part("list_tasks", {"status": ["FAILURE"], "limit": 10}),
        },
    ),
    View(
        "celery://workers", "workers", "Workers",
        "Each worker's stats, queues, registered and held tasks (inspect_workers).",
        _one("inspect_workers"),
    ),
    View(
        "celery://queues", "queues", "Queues",
        "Messages waiting per queue and who consumes each (queue_lengths).",
        _one("queue_lengths"),
    ),
    View(
        "celery://schedules", "schedules", "Periodic tasks",
        "Periodic tasks with schedule, next and last run (list_periodic_tasks, first 500).",
        _one("list_periodic_tasks", limit=500),
    ),
    View(
        "celery://catalog", "catalog", "Task catalog",
        "Task names the cluster can run, with signature and summary (list_task_types).",
        _one("list_task_types", limit=500),
    ),
    View(
        "celery://tasks/{task_id}", "task", "A task",
        "One task's state and metadata (get_status). Subscribe to be told when it changes.",
        _one("get_status"), {"task_id": ("task_id", "task_id")},
    ),
    View(
        "celery://workflows/{workflow_id}", "workflow", "A workflow",
        "A workflow's tree with each task's state (get_workflow). Subscribe to be told when "
        "one of its tasks changes.",
        _one("get_workflow"), {"workflow_id": ("workflow_id", "task_id")},
    ),
    View(
        "celery://catalog/{task_name}", "task_type", "How to call a task",
        "Docstring, parameters, queue, limits and retry policy of one task (describe_task).",
        _one("describe_task"), {"task_name": ("task_name", "task_name")},
    ),
    View(
        "celery://schedules/{name}", "schedule", "A periodic task",
        "One periodic task: schedule, args, last and next run (get_periodic_task).",
        _one("get_periodic_task"), {"name": ("name", "schedule")},
    ),
)  # fmt: skip


def offered_views(settings: Settings) -> list[View]:
    """The views the MCP server offers under `settings` (the main operation's toolset on)."""
    return [v for v in VIEWS if offers(settings, v.main.toolset, True, "mcp")]


def prepare_view(view: View, settings: Settings, values: Mapping[str, str]) -> dict[str, Call]:
    """The calls that compute `view` for template `values`, each through the funnel; parts of
    a composite whose toolset is off are left out (see `assemble`)."""
    if set(values) != set(view.variables):
        raise InvalidArgument(
            f"{view.uri} takes {sorted(view.variables)}, got {sorted(values)}",
            hint=f"read a URI of the form {view.uri}",
        )
    calls: dict[str, Call] = {}
    for key, part in view.parts.items():
        if key and not offers(settings, part.toolset, True, "mcp"):
            continue
        fields = dict(part.fields) | {view.variables[v][0]: values[v] for v in values}
        calls[key] = prepare(part.operation, settings, fields, "mcp")
    return calls


def assemble(view: View, results: Mapping[str, BaseModel]) -> BaseModel:
    """The view's model from its calls' results."""
    if view.uri != CLUSTER_URI:
        return results[""]
    omitted = [
        f"{key} (needs the {part.toolset} toolset)"
        for key, part in view.parts.items()
        if key not in results
    ]
    health = results["health"]
    queues = results.get("queues")
    failures = results.get("recent_failures")
    assert isinstance(health, HealthResult)
    assert queues is None or isinstance(queues, QueueLengthsResult)
    assert failures is None or isinstance(failures, ListTasksResult)
    return ClusterOverview(health=health, queues=queues, recent_failures=failures, omitted=omitted)
