"""Models of the `workflows` toolset: chain, group, chord, map and the workflow tree."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from celery_mcp.models.common import Json, Model, TaskId, TaskName, Truncation
from celery_mcp.models.tasks import TaskOptions, TaskResult, WaitS

WorkflowKind = Literal["chain", "group", "chord", "map"]

#: A node status: a Celery state, NOT_RUN (models.common) for chain steps after the one that
#: failed, or NOT_SENT for tasks whose publish failed (a publish that stopped part-way).
NOT_SENT = "NOT_SENT"

DRY_RUN = Field(False, description="Return the canvas that would be sent, publish nothing.")


#: What a nested step's send_task options look like in tools/list: names and types only.
_STEP_OPTION_TYPES: dict[str, dict[str, Any]] = {
    "countdown": {"type": "number"},
    "eta": {"type": "string", "format": "date-time"},
    "expires": {"type": ["number", "string"]},
    "queue": {"type": "string"},
    "priority": {"type": "integer"},
    "retries": {"type": "integer"},
    "retry_delay_s": {"type": "number"},
    "retry_delay_max_s": {"type": "number"},
}


def _compact_step_schema(schema: dict[str, Any]) -> None:
    """Shrink a nested step's schema, which every workflow tool repeats in tools/list.

    Its options are send_task's (same bounds, still enforced on input), so the listing names
    them with their types; the bounds of task_name are checked on input too.
    """
    props = schema["properties"]
    props.update({k: dict(v) for k, v in _STEP_OPTION_TYPES.items() if k in props})
    if "task_name" in props:
        props["task_name"] = {"type": "string", "description": "Task name, e.g. 'demo.add'."}
    schema["description"] = " ".join(schema.get("description", "").split())


class StepOptions(TaskOptions):
    """send_task's options."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_compact_step_schema)


class WorkflowStep(TaskOptions):
    """A task with send_task's options."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_compact_step_schema)

    task_name: TaskName
    args: list[Json] = Field(default_factory=list, description="Positional args (JSON list).")
    kwargs: dict[str, Json] = Field(default_factory=dict, description="Keyword args (JSON object).")
    validate_args: bool = Field(True, description="Check args against the task signature first.")
    immutable: bool = Field(False, description="Do not receive the previous result.")


class ChainInput(Model):
    """Run tasks one after another, each receiving the previous result as first argument."""

    steps: list[WorkflowStep] = Field(
        description="Tasks in order; step N+1 gets step N's result prepended to its args "
        "unless immutable."
    )
    dry_run: bool = DRY_RUN
    wait_s: WaitS = 0.0


class GroupInput(Model):
    """Run tasks in parallel."""

    tasks: list[WorkflowStep] = Field(description="Tasks to run in parallel.")
    dry_run: bool = DRY_RUN


class ChordInput(Model):
    """Run header tasks in parallel, then a callback on the list of their results."""

    header: list[WorkflowStep] = Field(description="Tasks to run in parallel.")
    callback: WorkflowStep = Field(
        description="Task that receives the list of header results as its first argument."
    )
    dry_run: bool = DRY_RUN
    wait_s: WaitS = 0.0


class MapInput(Model):
    """Run one task once per argument list, optionally chunked, optionally with a callback."""

    task_name: TaskName
    items: list[list[Json]] = Field(description="One args list per call, e.g. [[1, 2], [3, 4]].")
    options: StepOptions | None = Field(None, description="send_task options for every call.")
    chunk_size: int | None = Field(
        None, ge=1, le=10_000, description="Items per message; a chunk's result is a list."
    )
    chord_callback: WorkflowStep | None = Field(
        None, description="Task run on the list of all results (of chunk lists if chunked)."
    )
    validate_args: bool = Field(True, description="Check each item against the task signature.")
    dry_run: bool = DRY_RUN


class WorkflowResult(Model):
    """A workflow that was published (or, with dry_run, the canvas that would be)."""

    workflow_id: str | None = Field(
        description="Id for get_status / get_result / get_workflow: the last step of a chain, "
        "the callback of a chord, the saved group otherwise. None on dry_run."
    )
    task_count: int = Field(description="Tasks in the workflow (callback included).")
    canvas: Json = Field(None, description="Celery canvas as JSON (dry_run only, size-capped).")
    message: str = Field(description="What happened and what to call next.")
    warnings: list[str] = Field(
        default_factory=list, description="E.g. a queue of a step that no live worker consumes."
    )
    outcome: TaskResult | None = Field(
        None, description="With wait_s: the workflow's result, or timed_out=true."
    )


class GetWorkflowInput(Model):
    """Read a workflow's tree."""

    workflow_id: TaskId
    status: list[str] | None = Field(
        None, description="Only list nodes with these statuses, e.g. ['FAILURE', 'NOT_RUN']."
    )
    offset: int = Field(0, ge=0, description="Skip this many (filtered) nodes.")
    limit: int = Field(50, ge=1, le=500, description="List at most this many nodes.")


class WorkflowNode(Model):
    """One task of a workflow."""

    index: int = Field(description="Position in the chain or group (0-based).")
    task_id: str
    task_name: str
    status: str = Field(description="Celery state, or NOT_RUN after a failed chain step.")
    items: int | None = Field(None, description="Items in this chunk (chunked map only).")
    result: Json = Field(None, description="Return value when SUCCESS (size-capped).")
    error: str | None = Field(None, description="'ExceptionType: message' when it failed.")


class WorkflowTree(Model):
    """A workflow's nodes with their statuses, results and errors."""

    workflow_id: str
    kind: WorkflowKind
    status: str = Field(description="Overall: PENDING, STARTED, SUCCESS or FAILURE.")
    ready: bool = Field(description="True when nothing more will run.")
    counts: dict[str, int] = Field(description="Nodes by status (callback included).")
    total: int = Field(description="Nodes in the workflow (callback included).")
    failed_at: int | None = Field(
        None, description="Index of the first failed step or task (where a chain stopped)."
    )
    result: Json = Field(None, description="Final result when SUCCESS (size-capped).")
    error: str | None = Field(None, description="Why the workflow failed.")
    group_id: str | None = Field(None, description="Celery group id of the parallel part.")
    nodes: list[WorkflowNode] = Field(description="Steps or parallel tasks, in order (a page).")
    callback: WorkflowNode | None = Field(None, description="Chord callback, if any.")
    more: bool = Field(description="More nodes match: call again with offset += len(nodes).")
    truncated: list[Truncation] = Field(default_factory=list, description="What was cut.")
