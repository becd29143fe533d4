"""Pieces shared by the models of several toolsets."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue

TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # any Celery id (custom ids hold '/', '@', spaces)
        description="Id from send_task or a workflow tool.",
    ),
]
TaskName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.:\-]*$",
        description="Task name, e.g. 'demo.add'.",
    ),
]
QueueName = Annotated[
    str,
    Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:\-@]+$", description="Queue name."),
]
Json = JsonValue


class TaskState(StrEnum):
    """The task states Celery defines; a task may also set its own (`update_state`)."""

    PENDING = "PENDING"  # unknown to the backend: queued, not yet started, or never sent
    RECEIVED = "RECEIVED"  # a worker holds it
    STARTED = "STARTED"  # running on a worker
    RETRY = "RETRY"  # failed, will run again
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"  # revoked, expired or terminated
    REJECTED = "REJECTED"
    IGNORED = "IGNORED"


#: A task's state: one of TaskState, or a custom state the task set itself (e.g. PROGRESS).
Status = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description="Celery state (PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, "
        "REVOKED, REJECTED, IGNORED) or a custom state the task set.",
    ),
]

#: States after which a task runs no more (Celery's READY_STATES, plus REJECTED and IGNORED,
#: which are final too): the one ready set of this project.
READY_STATES: frozenset[str] = frozenset(
    {TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED, TaskState.REJECTED, TaskState.IGNORED}
)
#: The states Celery defines; any other is a custom state a task set (`update_state`).
KNOWN_STATES: frozenset[str] = frozenset(TaskState)
#: Not a Celery state: a chain step that never ran because a step before it failed (Celery
#: stores that failure under the step's id too, as if it had failed itself).
NOT_RUN = "NOT_RUN"
#: Ready states that are not a success.
FAILED_STATES: frozenset[str] = frozenset(
    {TaskState.FAILURE, TaskState.REVOKED, TaskState.REJECTED}
)


class Model(BaseModel):
    """Base of every input and output model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


Truncation = str
"""What was cut from an output to respect the size cap, e.g. 'result: 120000 -> 64000 bytes'."""


class ErrorDetail(Model):
    """A failed call, as every front end reports it: the MCP error result's structured
    content, the CLI's `{"error": ...}` line."""

    code: str = Field(description="Stable error code, e.g. 'invalid_argument', 'unknown_task'.")
    message: str = Field(description="What went wrong.")
    hint: str | None = Field(None, description="What to do next.")

    def text(self) -> str:
        """One line, code first: 'code: message (hint)'."""
        return f"{self.code}: {self.message}" + (f" ({self.hint})" if self.hint else "")
