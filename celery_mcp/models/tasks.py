"""Models of the `tasks` toolset: send, status, result, revoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator, model_validator

from celery_mcp.models.common import Json, Model, QueueName, Status, TaskId, TaskName, Truncation

MAX_COUNTDOWN_S = 365 * 86_400.0

Signal = Literal["SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"]


class TaskOptions(Model):
    """How and where one task runs; shared by send_task and every workflow step."""

    countdown: float | None = Field(
        None,
        ge=0,
        le=MAX_COUNTDOWN_S,
        description="Delay in seconds before it may run.",
    )
    eta: AwareDatetime | None = Field(
        None, description="Earliest run time (ISO 8601 with timezone)."
    )
    expires: float | AwareDatetime | None = Field(
        None,
        description="Discard if not started by then (seconds or ISO time).",
    )
    queue: QueueName | None = Field(None, description="Queue (default: the task's route).")
    priority: int | None = Field(
        None, ge=0, le=9, description="0-9, 9 served first (on every broker)."
    )
    retries: int = Field(0, ge=0, le=50, description="Retry up to N times if it raises.")
    retry_delay_s: float = Field(
        1.0, ge=0, le=86_400, description="First retry delay; doubles each retry."
    )
    retry_delay_max_s: float = Field(600.0, ge=0, le=86_400, description="Cap on the retry delay.")
    accept_redelivery: bool = Field(
        False,
        description="Redis brokers: send even when a delay reaches the visibility timeout "
        "(the task may then run more than once).",
    )

    @field_validator("eta", "expires", mode="before")
    @classmethod
    def _offset_required(cls, value: object, info: ValidationInfo) -> object:
        """An ISO time without offset is ambiguous: say how to write it (Python callers of the
        facade pass datetimes, naive ones read as their local time)."""
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                return value  # not a time: the field's own message says what is expected
            if when.tzinfo is None:
                raise ValueError(
                    f"{info.field_name} {value!r} has no timezone offset; add 'Z' for UTC "
                    f"(e.g. '{when.isoformat()}Z') or the offset, e.g. '+02:00'"
                )
        return value

    @model_validator(mode="after")
    def _check_times(self) -> TaskOptions:
        if self.countdown is not None and self.eta is not None:
            raise ValueError("give countdown or eta, not both")
        if isinstance(self.expires, float | int) and not 0 < self.expires <= MAX_COUNTDOWN_S:
            raise ValueError(f"expires must be in (0, {MAX_COUNTDOWN_S:.0f}] seconds")
        latest = datetime.now(UTC) + timedelta(seconds=MAX_COUNTDOWN_S)
        for name, when in (("eta", self.eta), ("expires", self.expires)):
            if isinstance(when, datetime) and when > latest:
                raise ValueError(
                    f"{name} {when.isoformat()} is more than {MAX_COUNTDOWN_S / 86_400:.0f} days "
                    "ahead; use a periodic schedule for work that far out"
                )
        return self


#: A wait for the outcome right after sending: one agent step instead of send + get_result.
WaitS = Annotated[
    float,
    Field(
        ge=0,
        le=3600,
        description="Also wait up to this many seconds for the result (0: return at once); "
        "the result is in outcome.",
    ),
]


class SendTaskInput(TaskOptions):
    """Send one task by name."""

    task_name: TaskName
    args: list[Json] = Field(default_factory=list, description="Positional args (JSON list).")
    kwargs: dict[str, Json] = Field(default_factory=dict, description="Keyword args (JSON object).")
    validate_args: bool = Field(True, description="Check args against the task signature first.")
    wait_s: WaitS = 0.0


class SendTaskResult(Model):
    """A task that was published to the broker."""

    task_id: str = Field(description="Id to pass to get_status / get_result / revoke.")
    task_name: str
    status: Status = Field(description="PENDING until a worker starts it.")
    queue: str | None = Field(None, description="Queue it was routed to (None: default).")
    eta: datetime | None = Field(None, description="Earliest start time, if delayed.")
    expires: datetime | None = Field(None, description="Discard time, if any.")
    warnings: list[str] = Field(
        default_factory=list, description="Sent, but not as asked (e.g. priority ignored)."
    )
    outcome: TaskResult | None = Field(
        None, description="With wait_s: the result, or timed_out=true (then call get_result)."
    )


class TaskIdInput(Model):
    """One task id."""

    task_id: TaskId


class TaskStatus(Model):
    """What the result backend knows about one task (no waiting)."""

    task_id: str
    status: Status
    ready: bool = Field(description="True when the task finished (success, failure, revoked).")
    task_name: str | None = Field(None, description="Known once a worker received it.")
    args: list[Json] | None = None
    kwargs: dict[str, Json] | None = None
    worker: str | None = Field(None, description="Hostname of the worker that ran it.")
    queue: str | None = None
    retries: int | None = Field(None, description="Retries so far.")
    date_done: datetime | None = None
    meta: Json = Field(
        None, description="What the task reported with a custom status (e.g. PROGRESS; capped)."
    )
    note: str | None = Field(None, description="How to read the status (e.g. PENDING).")
    truncated: list[Truncation] = Field(
        default_factory=list, description="What was cut (args/kwargs over the output cap)."
    )


class GetResultInput(Model):
    """Wait (bounded) for a task's result."""

    task_id: TaskId
    timeout_s: float = Field(
        10.0, ge=0, le=3600, description="Longest wait in seconds; 0 returns at once."
    )


class TaskResult(Model):
    """A task's outcome, or its status if it is not finished within the wait."""

    task_id: str
    status: Status
    ready: bool
    success: bool = Field(description="True only when the task finished with SUCCESS.")
    result: Json = Field(None, description="Return value when success (size-capped).")
    error: str | None = Field(None, description="'ExceptionType: message' when it failed.")
    traceback: str | None = Field(None, description="Worker traceback when it failed (capped).")
    meta: Json = Field(
        None, description="What the task reported with a custom status (e.g. PROGRESS; capped)."
    )
    waited_s: float = Field(description="How long this call waited.")
    timed_out: bool = Field(False, description="True when the wait ran out before the end.")
    note: str | None = Field(None, description="How to read a PENDING status.")
    truncated: list[Truncation] = Field(default_factory=list, description="What was cut.")


class RevokeInput(Model):
    """Revoke a task; optionally terminate it if it is running."""

    task_id: TaskId
    terminate: bool = Field(False, description="Also kill it if running (prefork workers only).")
    signal: Signal = Field("SIGTERM", description="Signal for terminate.")
    confirm: bool = Field(False, description="Required with terminate=true; else a dry run.")


class RevokeResult(Model):
    """What revoke did (or would do, without confirm)."""

    task_id: str
    executed: bool = Field(description="False on a dry run (terminate without confirm).")
    terminate: bool
    signal: str | None
    status_before: Status | None = Field(
        None, description="The task's status before (None: the app keeps no results)."
    )
    revoked_count: int = Field(
        description="Task ids revoked: 1, or every task of a workflow id (chain, group, chord, "
        "map); 0 on a dry run."
    )
    message: str = Field(description="What happened or would happen.")
