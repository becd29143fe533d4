"""Models of the `history` toolset: list_tasks, get_task, retry_task, retry_failed."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, Field

from celery_mcp.models.common import Json, Model, Status, TaskId, Truncation


class Window(Model):
    """A time window over when tasks were first seen (sent, or received when not sent here)."""

    within_s: float | None = Field(
        None, gt=0, description="Only tasks first seen in the last N seconds."
    )
    since: AwareDatetime | None = Field(None, description="Only tasks first seen at or after.")
    until: AwareDatetime | None = Field(None, description="Only tasks first seen at or before.")


class ListTasksInput(Window):
    """Filter the recorded task history."""

    status: list[Status] | None = Field(
        None, description="Only these statuses, e.g. ['FAILURE']. Default: all."
    )
    task_name: str | None = Field(
        None, max_length=255, description="Task name or glob, e.g. 'demo.*'."
    )
    worker: str | None = Field(None, max_length=255, description="Worker hostname or glob.")
    queue: str | None = Field(None, max_length=255, description="Queue name or glob.")
    limit: int = Field(20, ge=1, le=200, description="Most tasks to return.")
    cursor: str | None = Field(
        None, max_length=300, description="next_cursor of the previous page."
    )


class TaskSummary(Model):
    """One task in a listing."""

    task_id: str
    task_name: str | None
    status: Status
    first_seen: datetime = Field(description="When it was sent (or first seen).")
    finished: datetime | None = Field(None, description="When it succeeded/failed/was revoked.")
    runtime_s: float | None = None
    worker: str | None = None
    queue: str | None = None
    retries: int | None = None
    error: str | None = Field(None, description="Exception, short, when it failed.")


class RecorderStatus(Model):
    """Whether a `celery-mcp monitor` is recording the history."""

    recording: bool = Field(description="True when a monitor holds the recorder lock.")
    last_event_age_s: float | None = Field(None, description="Seconds since the last event.")
    tasks_kept: int = Field(description="Tasks in the history now.")
    max_tasks: int = Field(description="Retention cap by count.")
    max_age_s: int = Field(description="Retention cap by age.")
    note: str | None = Field(None, description="What to do when nothing is recorded.")


class ListTasksResult(Model):
    """A page of tasks, newest first."""

    tasks: list[TaskSummary]
    next_cursor: str | None = Field(None, description="Pass as cursor for the next page.")
    counts_by_status: dict[str, int] = Field(
        description="Tasks per status in the window matching status/task_name "
        "(worker/queue filters not applied)."
    )
    scanned: int = Field(description="History entries examined for this page.")
    complete: bool = Field(description="False when the scan budget ran out; use next_cursor.")
    recorder: RecorderStatus


class GetTaskInput(Model):
    """One task id."""

    task_id: TaskId


class Timeline(Model):
    """When each step happened (UTC)."""

    sent: datetime | None = None
    received: datetime | None = None
    started: datetime | None = None
    retried: datetime | None = Field(None, description="Last retry.")
    succeeded: datetime | None = None
    failed: datetime | None = None
    revoked: datetime | None = None
    rejected: datetime | None = None
    finished: datetime | None = Field(None, description="Success, failure or revoke time.")


class TaskDetail(Model):
    """Everything known about one task, from the history and the result backend."""

    task_id: str
    task_name: str | None
    status: Status
    args: Json = Field(None, description="JSON list when known exactly, else a repr string.")
    kwargs: Json = Field(None, description="JSON object when known exactly, else a repr string.")
    args_exact: bool = Field(description="True when args/kwargs are exact (retry_task needs it).")
    timeline: Timeline
    runtime_s: float | None = None
    worker: str | None = None
    queue: str | None = None
    retries: int | None = None
    eta: str | None = None
    expires: str | None = None
    result: Json = Field(None, description="Return value when it succeeded (capped).")
    exception: str | None = Field(None, description="'Type: message' when it failed.")
    traceback: str | None = Field(None, description="Worker traceback (capped).")
    meta: Json = Field(
        None, description="What the task reported with a custom status (e.g. PROGRESS; capped)."
    )
    parent_id: str | None = None
    root_id: str | None = None
    children: list[str] = Field(default_factory=list, description="Child task ids (first 100).")
    children_count: int = 0
    deliveries: int = Field(
        0,
        description="Times a worker received this task id (recorded history; each retry is "
        "one more): over retries + 1, it was delivered again (a lost worker's task) or "
        "published twice under one id (a periodic run re-sent after its beat died right "
        "after publishing it).",
    )
    retry_of: str | None = Field(None, description="Task this one re-ran (retry_task).")
    retried_as: list[str] = Field(default_factory=list, description="Re-runs made by retry_task.")
    blocked_by: str | None = Field(
        None, description="NOT_RUN: the failed chain step that stopped this one."
    )
    sources: list[str] = Field(description="Where this came from: history, backend.")
    truncated: list[Truncation] = Field(default_factory=list)


class RetryTaskInput(Model):
    """Re-send one failed or revoked task."""

    task_id: TaskId


class RetryTaskResult(Model):
    """The new task that re-runs the original."""

    original_id: str
    new_task_id: str = Field(description="Id of the re-run; get_result waits for it.")
    task_name: str
    queue: str | None = None
    original_status: Status
    args_source: str = Field(
        description="Where the original arguments came from: backend (result_extended), sent "
        "(noted when this server sent it) or repr (the worker's repr, parsed)."
    )


class RetryFailedInput(Window):
    """Re-send failed tasks in bulk."""

    task_name: str | None = Field(
        None, max_length=255, description="Task name or glob; default all."
    )
    max_tasks: int = Field(20, ge=1, le=500, description="Most tasks to retry in this call.")
    dry_run: bool = Field(False, description="Only list what would be retried.")
    confirm: bool = Field(False, description="Required to send; without it this is a dry run.")


class RetryCandidate(Model):
    """One failed task considered by retry_failed."""

    task_id: str
    task_name: str | None
    new_task_id: str | None = Field(None, description="Set when it was re-sent.")
    skipped: str | None = Field(None, description="Why it was not (or would not be) retried.")


class RetryFailedResult(Model):
    """What retry_failed did (or would do)."""

    executed: bool = Field(description="False on a dry run (no confirm, or dry_run=true).")
    candidates: list[RetryCandidate]
    retried: int = Field(description="Tasks re-sent (or that would be).")
    skipped: int
    more: bool = Field(description="True when more failed tasks match than max_tasks.")
    message: str
