"""Models of the `catalog` toolset: which tasks exist and how to call them.

`TaskSpec` is what one process (the imported app, or a `celery-mcp worker` answering the
`mcp_task_specs` control command) knows about one task: its signature as a JSON schema and its
options. Docstrings in it are user data: capped, returned in results, never tool descriptions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from celery_mcp.models.common import Json, Model, TaskName

ParamKind = Literal[
    "positional_only", "positional_or_keyword", "keyword_only", "var_positional", "var_keyword"
]
Source = Literal["app", "worker", "unknown"]

MAX_PAGE = 500


class ParamInfo(Model):
    """One parameter of a task function."""

    name: str = Field(description="Parameter name (the kwargs key, unless positional_only).")
    kind: ParamKind = Field(
        description="How it is passed; var_positional is *args, var_keyword is **kwargs."
    )
    type: str | None = Field(None, description="Type as written, e.g. 'list[int]'; None: any.")
    required: bool = Field(description="True when it has no default.")
    default: Json = Field(None, description="Default value when not required (JSON, or repr).")


class TaskSpec(Model):
    """What one app or worker knows about a task: signature, schema, docs, routing, limits and
    retry policy."""

    model_config = ConfigDict(extra="ignore")  # a newer worker may send more fields

    name: str = Field(description="Registered task name.")
    signature: str | None = Field(
        None, description="Python-style signature, e.g. 'demo.add(x: int, y: int)'."
    )
    summary: str = Field("", description="First line of the docstring (capped).")
    doc: str | None = Field(None, description="Full docstring (user text, capped).")
    doc_truncated: bool = Field(False, description="True when the docstring was cut.")
    parameters: list[ParamInfo] = Field(default_factory=list, description="Parameters in order.")
    parameters_schema: dict[str, Any] | None = Field(
        None,
        description="JSON schema of the parameters as keywords; additionalProperties is the "
        "**kwargs value schema or false.",
    )
    var_args_schema: dict[str, Any] | None = Field(
        None, description="JSON schema of *args (an array), if the task takes them."
    )
    unchecked: list[str] = Field(
        default_factory=list, description="Parameters whose type cannot be checked (any value)."
    )
    queue: str | None = Field(None, description="Queue the task is routed to by default.")
    rate_limit: str | None = Field(None, description="Worker rate limit, e.g. '10/s'.")
    time_limit_s: float | None = Field(None, description="Hard time limit (None: no limit).")
    soft_time_limit_s: float | None = Field(None, description="Soft time limit (None: no limit).")
    max_retries: int | None = Field(None, description="Most retries the task itself makes.")
    default_retry_delay_s: float | None = Field(None, description="Delay between its retries.")
    autoretry_for: list[str] = Field(
        default_factory=list, description="Exception types that make it retry by itself."
    )
    retry_backoff: bool | float | None = Field(None, description="Exponential backoff setting.")
    acks_late: bool | None = Field(None, description="Acknowledged after running (redelivered).")
    ignore_result: bool | None = Field(None, description="True: no result is stored.")


class ListTaskTypesInput(Model):
    """Filter and page through the task catalog."""

    pattern: str = Field(
        "*",
        max_length=255,
        description="Name glob, e.g. 'billing.*' (plain text: substring).",
    )
    offset: int = Field(0, ge=0, description="Skip this many (next_offset of the last page).")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="Most tasks to return.")


class TaskTypeSummary(Model):
    """One task in the catalog listing."""

    name: str = Field(description="Task name to pass to send_task.")
    signature: str | None = Field(
        description="How to call it, e.g. 'demo.add(x: int, y: int)'; None: signature unknown."
    )
    summary: str = Field(description="First line of its docstring.")
    source: Source = Field(
        description="Where the signature comes from: the imported app, a celery-mcp worker, "
        "or unknown (only plain celery workers have it)."
    )
    worker_count: int = Field(description="Live workers that have it registered.")


class TaskTypeList(Model):
    """A page of the task catalog, sorted by name."""

    tasks: list[TaskTypeSummary]
    total: int = Field(description="Tasks matching the pattern (all pages).")
    next_offset: int | None = Field(
        None, description="Pass as offset for the next page; None on the last page."
    )
    workers_answered: int = Field(description="Live workers that reported their tasks.")


class DescribeTaskInput(Model):
    """One task name."""

    task_name: TaskName


class TaskDescription(TaskSpec):
    """Everything known about one task: how to call it, where it runs, how it retries."""

    source: Source = Field(description="Where the signature comes from (app, worker, unknown).")
    workers: list[str] = Field(
        default_factory=list, description="Live workers that have it registered."
    )
    note: str | None = Field(None, description="Caveat, e.g. why the signature is unknown.")
