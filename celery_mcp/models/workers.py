"""Models of the `workers` toolset: inspect, ping, tasks on workers, queues, control, shutdown.

Every input takes the same `destination` (worker hostnames; omitted: every worker) and
`timeout_s`; every output says which addressed workers did not answer (`missing`), with the
timeout used and how long the call took.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from celery_mcp.models.common import Json, Model, QueueName, TaskName, Truncation

Hostname = str  # worker node name, e.g. 'w1@host'
RATE_PATTERN = r"^\d+(\.\d+)?(/[smh])?$"
MAX_TIMEOUT_S = 60.0


class Target(Model):
    """Which workers to address and how long to wait for their replies."""

    destination: list[Hostname] | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Worker hostnames ('w1@host'); omit for all.",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Reply wait, s (default 1).",
    )


class MissingReason(StrEnum):
    """Why an addressed worker is not in the replies."""

    DISCONNECTED = "disconnected"  # registered with the broker, not connected: the process is gone
    NO_REPLY = "no_reply"  # did not answer within the timeout: busy, frozen, slow or gone
    UNKNOWN = "unknown"  # no worker with this hostname is registered with the broker


class MissingWorker(Model):
    """An addressed (or registered) worker that did not answer."""

    hostname: str
    reason: MissingReason = Field(
        description="disconnected: the process is gone (killed or crashed without "
        "unregistering); no_reply: silent for the whole timeout (busy, frozen or slow); "
        "unknown: no worker registered this name."
    )
    detail: str = Field(description="What was observed and what to do next.")


class RollCall(Model):
    """Who did not answer, the timeout used and the time the call took."""

    missing: list[MissingWorker] = Field(
        default_factory=list, description="Addressed workers that did not answer."
    )
    timeout_s: float = Field(description="Timeout used for worker replies, seconds.")
    elapsed_ms: float = Field(description="Time this call took.")


# -- Inspect: no side effects


class PingInput(Target):
    """Ping workers."""


class WorkerPing(Model):
    """One worker that answered ping."""

    hostname: str
    latency_ms: float = Field(description="Time from sending the ping to this worker's reply.")


class PingResult(RollCall):
    """Workers that answered ping, fastest first."""

    active_workers: list[WorkerPing] = Field(description="Workers that answered, fastest first.")


class TaskOnWorker(Model):
    """A task a worker holds: running (active), prefetched (reserved) or waiting for its ETA."""

    id: str = Field(description="Task id (for get_result, revoke).")
    name: str | None = Field(None, description="Task name.")
    worker: str = Field(description="Hostname of the worker that holds it.")
    args: Json = Field(None, description="Positional arguments (size-capped).")
    kwargs: Json = Field(None, description="Keyword arguments (size-capped).")
    queue: str | None = Field(None, description="Queue (routing key) it came from.")
    worker_pid: int | None = Field(None, description="Pool process running it (active only).")
    started_at: datetime | None = Field(None, description="When it started (active only).")
    eta: datetime | None = Field(None, description="When it is due (scheduled only).")
    priority: int | None = None
    acknowledged: bool | None = None


class WorkerTasks(Model):
    """The tasks one worker holds; lists are capped at max_tasks, counts are not."""

    hostname: str
    active_count: int = Field(description="Tasks running now.")
    reserved_count: int | None = Field(None, description="Prefetched, waiting for a process.")
    scheduled_count: int | None = Field(None, description="Held until their ETA/countdown.")
    active_tasks: list[TaskOnWorker] = Field(default_factory=list)
    reserved_tasks: list[TaskOnWorker] = Field(default_factory=list)
    scheduled_tasks: list[TaskOnWorker] = Field(default_factory=list)
    truncated: list[Truncation] = Field(
        default_factory=list, description="Arguments cut to respect the output cap."
    )


class ActiveTasksInput(Target):
    """Tasks running on workers, and optionally those reserved or scheduled."""

    include_reserved: bool = Field(True, description="Also prefetched tasks.")
    include_scheduled: bool = Field(True, description="Also tasks waiting for an ETA.")
    max_tasks: int = Field(50, ge=0, le=1000, description="Cap per list and worker.")


class TaskCounts(Model):
    """Totals over the workers that answered."""

    workers: int = Field(description="Workers that answered.")
    active: int
    reserved: int | None = None
    scheduled: int | None = None


class ActiveTasksResult(RollCall):
    """Tasks the workers hold, each naming its worker; lists capped at max_tasks per worker."""

    counts: TaskCounts
    tasks: list[TaskOnWorker] = Field(description="Running now (active).")
    reserved: list[TaskOnWorker] = Field(
        default_factory=list, description="Prefetched, waiting for a pool process."
    )
    scheduled: list[TaskOnWorker] = Field(
        default_factory=list, description="Held until their ETA/countdown."
    )
    truncated: list[Truncation] = Field(
        default_factory=list, description="Arguments cut to respect the output cap."
    )


class RegisteredTasksInput(Target):
    """Task names each worker can run."""


#: Most task names listed per worker (and in a union); counts are never cut.
REGISTERED_CAP = 500


class WorkerRegistered(Model):
    """Task names one worker registers (the first REGISTERED_CAP, sorted)."""

    hostname: str
    tasks: list[str]
    count: int = Field(description="Task names it registers (the list may be cut).")


class RegisteredTasksResult(RollCall):
    """Task names per worker and their union."""

    tasks: list[str] = Field(description="Every task name some answering worker registers.")
    total: int = Field(description="Task names in the union (the list may be cut).")
    workers: list[WorkerRegistered]
    truncated: list[Truncation] = Field(default_factory=list, description="What was cut.")


class InspectWorkersInput(Target):
    """Everything about workers in one call."""

    max_tasks: int = Field(20, ge=0, le=1000, description="Cap per task list and worker.")


class Autoscale(Model):
    """Autoscaler bounds of a worker started with --autoscale."""

    max: int
    min: int


class WorkerStats(Model):
    """A worker's process, pool and totals (from `inspect stats`)."""

    pid: int | None = None
    uptime_s: float | None = None
    pool: str | None = Field(None, description="Pool implementation: prefork, thread, solo...")
    concurrency: int | None = Field(None, description="Pool size (max concurrency).")
    pool_processes: list[int] = Field(default_factory=list, description="Pool process ids.")
    autoscale: Autoscale | None = Field(None, description="Set when started with --autoscale.")
    prefetch_count: int | None = None
    processed: int = Field(0, description="Tasks this worker accepted since it started.")
    total: dict[str, int] = Field(
        default_factory=dict, description="Tasks accepted since start, by task name (Celery's)."
    )


class WorkerInfo(WorkerTasks):
    """One worker: stats, queues, registered tasks and tasks held."""

    stats: WorkerStats
    queues: list[str] = Field(default_factory=list, description="Queues it consumes from.")
    registered: list[str] = Field(
        default_factory=list, description="Task names it can run (the first 500)."
    )
    registered_count: int = Field(0, description="Task names it can run.")


class WorkerCounts(TaskCounts):
    """Totals at a glance."""

    missing: int = Field(description="Addressed workers that did not answer.")
    processed: int = Field(description="Tasks accepted since start, summed over workers.")
    concurrency: int = Field(description="Pool sizes summed over workers.")


class InspectWorkersResult(RollCall):
    """Every answering worker in detail, totals, and the workers that stayed silent."""

    counts: WorkerCounts
    workers: list[WorkerInfo]


class QueueLengthsInput(Model):
    """Broker-side depth of queues."""

    queues: list[QueueName] | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Default: every consumed queue + the default queue.",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Ask workers for their queues now, waiting this long (default: their "
        "answer of the last 5 s).",
    )
    consumers: bool = Field(True, description="Also list the workers consuming each queue.")


class QueueDepth(Model):
    """Messages waiting in one queue on the broker."""

    name: str
    messages: int | None = Field(description="Messages waiting (None when it could not be read).")
    by_priority: dict[str, int] = Field(
        default_factory=dict,
        description="Redis: messages per kombu priority sub-queue (key '0' is the queue itself).",
    )
    consumers: list[str] = Field(default_factory=list, description="Workers consuming from it.")
    consumer_count: int | None = Field(None, description="AMQP: consumers the broker reports.")
    exists: bool = Field(description="False when the broker has no such queue (AMQP).")
    error: str | None = None


class QueueLengthsResult(RollCall):
    """Queue depths, largest first, with the total."""

    broker: str = Field(description="Broker transport: redis, amqp, ...")
    total_messages: int
    queues: list[QueueDepth]
    note: str = Field(description="How to read the numbers.")


# -- Control: side effects


class PurgeQueueInput(Model):
    """Delete every message waiting in one queue."""

    queue: QueueName
    confirm: bool = Field(False, description="Required; else a dry run.")


class PurgeQueueResult(Model):
    """What purge_queue removed (or would remove)."""

    queue: str
    executed: bool = Field(description="False on a dry run.")
    messages_before: int = Field(description="Messages waiting before the call.")
    removed: int = Field(description="Messages deleted (0 on a dry run).")
    remaining: int = Field(description="Messages waiting after the call.")
    message: str


class ControlCommand(StrEnum):
    """Remote-control commands for workers."""

    POOL_RESTART = "pool_restart"  # replace pool processes, each after its next task (confirm)
    POOL_GROW = "pool_grow"  # add n pool processes
    POOL_SHRINK = "pool_shrink"  # remove n pool processes
    AUTOSCALE = "autoscale"  # set autoscaler max/min (workers started with --autoscale)
    ADD_CONSUMER = "add_consumer"  # start consuming from queue
    CANCEL_CONSUMER = "cancel_consumer"  # stop consuming from queue
    RATE_LIMIT = "rate_limit"  # task_name at most `rate` per worker ('0' removes the limit)
    TIME_LIMIT = "time_limit"  # task_name soft/hard time limits (unset ones are removed)


#: Arguments each command needs (and the optional ones it also takes).
COMMAND_ARGUMENTS: dict[ControlCommand, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ControlCommand.POOL_RESTART: ((), ()),
    ControlCommand.POOL_GROW: ((), ("n",)),
    ControlCommand.POOL_SHRINK: ((), ("n",)),
    ControlCommand.AUTOSCALE: (("max", "min"), ()),
    ControlCommand.ADD_CONSUMER: (("queue",), ()),
    ControlCommand.CANCEL_CONSUMER: (("queue",), ()),
    ControlCommand.RATE_LIMIT: (("task_name", "rate"), ()),
    ControlCommand.TIME_LIMIT: (("task_name",), ("soft", "hard")),
}
ARGUMENT_FIELDS = ("n", "max", "min", "queue", "task_name", "rate", "soft", "hard")


class ControlInput(Target):
    """One remote-control command and the arguments it needs."""

    command: ControlCommand = Field(
        description="Uses: pool_grow/shrink [n]; autoscale max min; add/cancel_consumer queue; "
        "rate_limit task_name rate; time_limit task_name [soft] [hard]."
    )
    n: int | None = Field(None, ge=1, description="Processes (default 1).")
    max: int | None = Field(None, ge=0)
    min: int | None = Field(None, ge=0)
    queue: QueueName | None = None
    task_name: TaskName | None = None
    rate: str | None = Field(
        None, pattern=RATE_PATTERN, description="'10/s', '100/m', '5/h'; '0' removes it."
    )
    soft: float | None = Field(None, gt=0, description="Seconds; unset removes it.")
    hard: float | None = Field(None, gt=0, description="Seconds; unset removes it.")
    confirm: bool = Field(False, description="Required by pool_restart; else a dry run.")

    @model_validator(mode="after")
    def _check_arguments(self) -> ControlInput:
        required, optional = COMMAND_ARGUMENTS[self.command]
        given = {f for f in ARGUMENT_FIELDS if getattr(self, f) is not None}
        lacking = [f for f in required if f not in given]
        extra = sorted(given - set(required) - set(optional))
        takes = ", ".join([*required, *(f"[{f}]" for f in optional)]) or "no arguments"
        if lacking or extra:
            wrong = f"missing {', '.join(lacking)}" if lacking else f"unexpected {', '.join(extra)}"
            raise ValueError(f"command {self.command.value} takes {takes}: {wrong}")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"autoscale needs min <= max, got min={self.min} max={self.max}")
        if self.soft is not None and self.hard is not None and self.soft > self.hard:
            raise ValueError(
                f"time_limit needs soft <= hard, got soft={self.soft} hard={self.hard}"
            )
        return self


class WorkerReply(Model):
    """One worker's answer to a control command."""

    hostname: str
    ok: bool
    message: str


class ControlResult(RollCall):
    """Per-worker replies to a control command (or the plan, on a dry run)."""

    command: ControlCommand
    executed: bool = Field(description="False on a dry run (pool_restart without confirm).")
    arguments: dict[str, Json] = Field(description="Arguments sent to the workers.")
    ok: int = Field(description="Workers that replied ok.")
    errors: int = Field(description="Workers that replied with an error.")
    replies: list[WorkerReply]
    message: str


class ShutdownInput(Target):
    """Stop workers (warm shutdown: running tasks finish first)."""

    destination: list[Hostname] | None = Field(
        None, min_length=1, max_length=500, description="Workers to stop; omit for ALL."
    )
    confirm: bool = Field(False, description="Required; else a dry run.")
    wait_s: float = Field(10.0, ge=0, le=300, description="Wait for them to leave, s.")


class ShutdownResult(RollCall):
    """Which workers were told to stop and which have left the cluster."""

    executed: bool = Field(description="False on a dry run.")
    targets: list[str] = Field(description="Workers that answered and were (or would be) stopped.")
    stopped: list[str] = Field(description="Targets that left the cluster within wait_s.")
    stopping: list[str] = Field(
        description="Targets still registered after wait_s (finishing running tasks)."
    )
    message: str
