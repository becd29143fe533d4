"""The operations: every one a front end offers, with what it needs to know about it.

`OPERATIONS` lists every operation: its name (the MCP tool, the CLI `--action`, the facade
method), toolset, input and output models, safety flags and the description agents read. The
implementation is the function of the same name in `celery_mcp.service.<module>`, a plain sync
function `(cluster, request[, progress]) -> response`; `funnel` loads it and runs calls.

The table imports only models, so a front end can list the operations (the MCP server answers
`tools/list`) without importing the implementations, which import Celery; and an
implementation may read the table (diagnose does) without an import circle.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from pydantic import BaseModel

from celery_mcp.config import Settings
from celery_mcp.errors import InvalidArgument
from celery_mcp.models import catalog as cat
from celery_mcp.models import diagnose as dia
from celery_mcp.models import health as hea
from celery_mcp.models import history as his
from celery_mcp.models import schedules as sch
from celery_mcp.models import tasks as tsk
from celery_mcp.models import workers as wrk
from celery_mcp.models import workflows as wfl
from celery_mcp.service.policy import FrontEnd, offers

#: Where each toolset's operations are implemented (module of celery_mcp.service).
MODULES = {
    "tasks": "tasks",
    "workers": "workers",
    "workflows": "workflows",
    "catalog": "catalog",
    "schedules": "schedules",
    "history": "history",
    "health": "health",
}


@dataclass(frozen=True)
class Operation:
    """One operation and what every front end needs to know about it."""

    name: str
    toolset: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    description: str
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    #: input field holding a wait in seconds, added to the call's bound
    wait_field: str | None = None
    #: the implementation takes a `progress` callback
    progress: bool = False
    module: str = field(default="", compare=False)

    @property
    def implemented_in(self) -> str:
        return f"celery_mcp.service.{self.module or MODULES[self.toolset]}"

    def bound_s(self, settings: Settings, request: BaseModel) -> float:
        """Upper bound on one call: the call timeout plus any wait the caller asked for."""
        extra = float(getattr(request, self.wait_field, 0) or 0) if self.wait_field else 0.0
        return settings.call_timeout_s + extra


def _ops(*ops: Operation) -> dict[str, Operation]:
    return {op.name: op for op in ops}


_W = "timeout_s"

OPERATIONS: dict[str, Operation] = _ops(
    # -- tasks
    Operation(
        "send_task", "tasks", tsk.SendTaskInput, tsk.SendTaskResult,
        "Send a task by name (args, kwargs, countdown, eta, expires, queue, priority, "
        "retries). Returns task_id at once, or with wait_s its result too.",
        wait_field="wait_s", progress=True,
    ),
    Operation(
        "get_status", "tasks", tsk.TaskIdInput, tsk.TaskStatus,
        "A task's current state and metadata (name, args, worker, retries), without waiting.",
        read_only=True,
    ),
    Operation(
        "get_result", "tasks", tsk.GetResultInput, tsk.TaskResult,
        "Wait up to timeout_s for a task's result or error; on timeout returns timed_out=true "
        "(call again).",
        read_only=True, wait_field=_W, progress=True,
    ),
    Operation(
        "revoke", "tasks", tsk.RevokeInput, tsk.RevokeResult,
        "Revoke a task; terminate=true also kills it if running (needs confirm=true, else a "
        "dry run).",
        destructive=True, idempotent=True,
    ),
    # -- workers: inspect
    Operation(
        "ping_workers", "workers", wrk.PingInput, wrk.PingResult,
        "Ping workers: who answers (with latency) and who is missing.",
        read_only=True, wait_field=_W,
    ),
    Operation(
        "get_active_tasks", "workers", wrk.ActiveTasksInput, wrk.ActiveTasksResult,
        "Tasks running on each worker, plus reserved (prefetched) and scheduled (ETA) ones.",
        read_only=True, wait_field=_W,
    ),
    Operation(
        "get_registered_tasks", "workers", wrk.RegisteredTasksInput, wrk.RegisteredTasksResult,
        "Task names each worker can run, and their union.",
        read_only=True, wait_field=_W,
    ),
    Operation(
        "inspect_workers", "workers", wrk.InspectWorkersInput, wrk.InspectWorkersResult,
        "Per worker: stats (pool, concurrency, processed), queues, registered and held tasks; "
        "missing workers.",
        read_only=True, wait_field=_W,
    ),
    Operation(
        "queue_lengths", "workers", wrk.QueueLengthsInput, wrk.QueueLengthsResult,
        "Messages waiting per queue and the workers consuming each (default: consumed queues "
        "+ default queue).",
        read_only=True, wait_field=_W,
    ),
    # -- workers: control
    Operation(
        "control_workers", "workers", wrk.ControlInput, wrk.ControlResult,
        "Remote control: pool_restart (needs confirm=true), pool_grow/shrink, autoscale, "
        "add/cancel_consumer, rate_limit, time_limit.",
        destructive=True, wait_field=_W,
    ),
    Operation(
        "purge_queue", "workers", wrk.PurgeQueueInput, wrk.PurgeQueueResult,
        "Delete all waiting messages of a queue. Needs confirm=true; else says how many it "
        "would delete.",
        destructive=True,
    ),
    Operation(
        "shutdown_workers", "workers", wrk.ShutdownInput, wrk.ShutdownResult,
        "Stop workers (warm); no destination stops ALL. Needs confirm=true, else lists who "
        "would stop.",
        destructive=True, wait_field="wait_s",
    ),
    # -- workflows
    Operation(
        "chain_tasks", "workflows", wfl.ChainInput, wfl.WorkflowResult,
        "Run tasks in sequence, each getting the previous result as first argument (unless "
        "immutable); a failed step stops the chain. Returns one id (the last step's); "
        "wait_s also waits for the result.",
        wait_field="wait_s", progress=True,
    ),
    Operation(
        "group_tasks", "workflows", wfl.GroupInput, wfl.WorkflowResult,
        "Run tasks in parallel. Returns one group id; get_result on it waits for all and "
        "returns the list of results.",
    ),
    Operation(
        "chord_workflow", "workflows", wfl.ChordInput, wfl.WorkflowResult,
        "Run header tasks in parallel, then the callback on the list of their results. "
        "Returns the callback's id; a failed header task makes it FAILURE. wait_s also waits "
        "for the result.",
        wait_field="wait_s", progress=True,
    ),
    Operation(
        "map_task", "workflows", wfl.MapInput, wfl.WorkflowResult,
        "Run one task once per argument list in items, optionally in chunks and with a "
        "chord_callback on all results. Returns one id (the callback's, else the group's).",
    ),
    Operation(
        "get_workflow", "workflows", wfl.GetWorkflowInput, wfl.WorkflowTree,
        "A workflow's tree: each task's name, id, state and result or error, counts by state, "
        "and where it failed. Filter with states, page with offset/limit.",
        read_only=True,
    ),
    # -- catalog
    Operation(
        "list_task_types", "catalog", cat.ListTaskTypesInput, cat.TaskTypeList,
        "Task names the cluster can run (app and live workers) by name glob, paged, with "
        "signature and summary.",
        read_only=True,
    ),
    Operation(
        "describe_task", "catalog", cat.DescribeTaskInput, cat.TaskDescription,
        "How to call a task: docstring, parameters JSON schema, queue, limits, retry policy, "
        "workers that have it.",
        read_only=True,
    ),
    # -- health
    Operation(
        "health", "health", hea.HealthInput, hea.HealthResult,
        "Check broker, backend, workers, beat and schedule store (bounded). Call first when "
        "something fails.",
        read_only=True,
    ),
    Operation(
        "diagnose", "health", dia.DiagnoseInput, dia.DiagnoseResult,
        "What is wrong: unconsumed queues, lost workers, stuck tasks, failure rates, beat, "
        "risky broker settings; ranked, with next calls.",
        read_only=True, module="diagnose",
    ),
    # -- schedules
    Operation(
        "add_periodic_task", "schedules", sch.AddPeriodicTaskInput, sch.PeriodicTask,
        "Add a periodic task: every N seconds, a crontab, or once at run_at. Needs a running "
        "`celery-mcp beat`; it first runs at its next due time. Returns the entry and "
        "next_run_at.",
    ),
    Operation(
        "list_periodic_tasks", "schedules", sch.ListPeriodicTasksInput,
        sch.ListPeriodicTasksResult,
        "List periodic tasks sorted by name, filtered by enabled and task_name (glob), one "
        "page at a time (offset/limit). Returns schedule, next and last run, run count.",
        read_only=True,
    ),
    Operation(
        "get_periodic_task", "schedules", sch.EntryNameInput, sch.PeriodicTask,
        "One periodic task: schedule, args, enabled, last and next run, total run count and "
        "the last run's task_id (pass it to get_result).",
        read_only=True,
    ),
    Operation(
        "update_periodic_task", "schedules", sch.UpdatePeriodicTaskInput, sch.PeriodicTask,
        "Change a periodic task's task, args, kwargs, schedule or options; fields left out "
        "stay. A new schedule starts counting from now (and revives a finished one-off). "
        "Returns the updated entry.",
        idempotent=True,
    ),
    Operation(
        "enable_periodic_task", "schedules", sch.EntryNameInput, sch.PeriodicTask,
        "Enable a periodic task; it runs at its next due time (runs missed while disabled are "
        "not replayed). Returns the entry.",
        idempotent=True,
    ),
    Operation(
        "disable_periodic_task", "schedules", sch.EntryNameInput, sch.PeriodicTask,
        "Disable a periodic task without removing it (enable_periodic_task resumes it).",
        idempotent=True,
    ),
    Operation(
        "remove_periodic_task", "schedules", sch.RemovePeriodicTaskInput,
        sch.RemovePeriodicTaskResult,
        "Delete a periodic task from the store (needs confirm=true; without it returns what "
        "it would remove). Runs already sent are not revoked.",
        destructive=True, idempotent=True,
    ),
    Operation(
        "run_periodic_task_now", "schedules", sch.EntryNameInput, sch.RunPeriodicTaskNowResult,
        "Send one extra run of a periodic task now, with its args and options; its schedule "
        "and run count do not change. Returns the task_id for get_result.",
    ),
    # -- history
    Operation(
        "list_tasks", "history", his.ListTasksInput, his.ListTasksResult,
        "Recorded tasks newest first, filtered by state, name glob, worker, queue and time; "
        "paged, with counts by state.",
        read_only=True,
    ),
    Operation(
        "get_task", "history", his.GetTaskInput, his.TaskDetail,
        "Everything known about one task: args, timeline, worker, result or traceback, "
        "parent/children, retry links.",
        read_only=True,
    ),
    Operation(
        "retry_task", "history", his.RetryTaskInput, his.RetryTaskResult,
        "Re-send a FAILURE or REVOKED task with its original name, args and queue; the ids "
        "are linked both ways.",
    ),
    Operation(
        "retry_failed", "history", his.RetryFailedInput, his.RetryFailedResult,
        "Re-send recent FAILURE tasks (name glob, time window), skipping retried ones. Needs "
        "confirm=true, else a dry run.",
        destructive=True,
    ),
)  # fmt: skip


def offered(settings: Settings, front_end: FrontEnd) -> list[Operation]:
    """The operations `front_end` offers under `settings`, in table order."""
    return [
        op for op in OPERATIONS.values() if offers(settings, op.toolset, op.read_only, front_end)
    ]


def find(name: str) -> Operation:
    """The operation `name`, or InvalidArgument naming the closest ones."""
    op = OPERATIONS.get(name)
    if op is None:
        close = difflib.get_close_matches(name, OPERATIONS, n=3)
        guess = f"did you mean {' or '.join(close)}? " if close else ""
        raise InvalidArgument(
            f"unknown operation {name!r}",
            hint=f"{guess}the operations are: {', '.join(OPERATIONS)}",
        )
    return op
