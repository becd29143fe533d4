"""CelerySkill: the Python API, over the same service operations as the MCP tools and the CLI.

    with CelerySkill() as skill:                  # embedded Valkey unless broker_url is given
        skill.register_task(lambda x, y: x + y, "local.add")
        skill.start_worker()                      # a real Celery worker in a thread of this process
        sent = skill.task_manager().send_task("local.add", args=[2, 3])
        skill.task_manager().get_result(sent["task_id"], timeout=10)["result"]   # 5

Every method builds its operation's input model from its arguments, calls the operation and
returns the output model as a dict (`model_dump(mode="json")`): the same shapes as the MCP
tools' structured content, from the same pydantic models. Failures raise the typed
`CeleryMcpError`s of `celery_mcp.errors` (bad arguments: `InvalidArgument`).

`start_worker()` runs a real `WorkController` with the threads pool in a daemon thread of this
process, not a subprocess: functions given to `register_task` then run as they are (closures,
lambdas, functions defined in `__main__` or a notebook), with no importable module path needed,
and it is up in well under a second. The price: no prefork pool, so `revoke(terminate=True)`
and `pool_restart` cannot act on it (start `celery-mcp worker` for those), and one local worker
per process (Celery keeps worker shutdown flags in module globals).

Tasks registered here are routed to `CelerySkill.local_queue`, which only the local worker
consumes (it also consumes the default queue): other workers never receive a function they do
not have. Workflow steps carry that queue in their signature, since a chain's next step or a
chord's callback is sent on by whichever worker ran the step before it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from celery_mcp.config import Settings
from celery_mcp.errors import (
    BrokerUnavailable,
    Forbidden,
    InvalidArgument,
    NotFound,
    WaitTimeout,
    validation_message,
)
from celery_mcp.local_worker import LocalWorker, nameable
from celery_mcp.service import schedule_rules
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.registry import Operation, load_operations

__all__ = [
    "CelerySkill",
    "History",
    "LocalWorker",
    "Scheduler",
    "TaskManager",
    "WorkerManager",
    "WorkflowHandle",
    "WorkflowManager",
]

Result = dict[str, Any]
Call = Callable[..., Result]

_LOCAL_WORKER_LOCK = threading.Lock()
_local_worker: LocalWorker | None = None
_instances = itertools.count(1)


class TaskManager:
    """Tasks: send by name, status, bounded result wait, revoke; the task catalog."""

    def __init__(self, skill: CelerySkill) -> None:
        self._skill = skill
        self._call: Call = skill._call

    def send_task(
        self,
        task_name: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Result:
        """Send `task_name` with args/kwargs; options: countdown, eta, expires, queue, priority,
        retries, retry_delay_s, retry_delay_max_s, validate_args. Returns a dict with task_id."""
        return self._call("send_task", task_name=task_name, args=args, kwargs=kwargs, **options)

    def get_status(self, task_id: str) -> Result:
        """State and metadata of a task, without waiting."""
        return self._call("get_status", task_id=task_id)

    def get_result(self, task_id: str, timeout: float = 10.0) -> Result:
        """Wait up to `timeout` seconds; returns success, result, error, ready, status, ..."""
        return self._call("get_result", task_id=task_id, timeout_s=timeout)

    def revoke(
        self,
        task_id: str,
        *,
        terminate: bool = False,
        signal: str = "SIGTERM",
        confirm: bool = False,
    ) -> Result:
        """Revoke a task; terminate=True (with confirm=True) also kills it if running."""
        return self._call(
            "revoke", task_id=task_id, terminate=terminate, signal=signal, confirm=confirm
        )

    def list_task_types(self, pattern: str = "*", *, offset: int = 0, limit: int = 100) -> Result:
        """Task names the cluster can run (app and live workers), with signatures."""
        return self._call("list_task_types", pattern=pattern, offset=offset, limit=limit)

    def describe_task(self, task_name: str) -> Result:
        """How to call one task: docstring, parameters (JSON schema), queue, limits."""
        return self._call("describe_task", task_name=task_name)


class WorkerManager:
    """Workers: inspect, ping, tasks held, queues, control, shutdown.

    `destination` (worker hostnames; None: every worker) and `timeout_s` (wait for replies;
    None: the inspect timeout setting) mean the same in every method.
    """

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    def inspect_workers(
        self,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        max_tasks: int = 20,
    ) -> Result:
        """Every answering worker in detail (pool, queues, tasks held, totals) and who is silent."""
        return self._call(
            "inspect_workers", destination=destination, timeout_s=timeout_s, max_tasks=max_tasks
        )

    def ping_workers(
        self, destination: list[str] | None = None, *, timeout_s: float | None = None
    ) -> Result:
        """Workers that answer ping, with latencies."""
        return self._call("ping_workers", destination=destination, timeout_s=timeout_s)

    def get_active_tasks(
        self,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        include_reserved: bool = True,
        include_scheduled: bool = True,
        max_tasks: int = 50,
    ) -> Result:
        """Tasks running on workers (and prefetched or waiting for their ETA)."""
        return self._call(
            "get_active_tasks",
            destination=destination,
            timeout_s=timeout_s,
            include_reserved=include_reserved,
            include_scheduled=include_scheduled,
            max_tasks=max_tasks,
        )

    def get_registered_tasks(
        self, destination: list[str] | None = None, *, timeout_s: float | None = None
    ) -> Result:
        """Task names each worker can run, and their union."""
        return self._call("get_registered_tasks", destination=destination, timeout_s=timeout_s)

    def queue_lengths(
        self, queues: list[str] | None = None, *, timeout_s: float | None = None
    ) -> Result:
        """Messages waiting per queue on the broker."""
        return self._call("queue_lengths", queues=queues, timeout_s=timeout_s)

    def purge_queue(self, queue: str, *, confirm: bool = False) -> Result:
        """Delete every message waiting in `queue` (a dry run unless confirm=True)."""
        return self._call("purge_queue", queue=queue, confirm=confirm)

    def control_workers(
        self,
        command: str,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        confirm: bool = False,
        **arguments: Any,
    ) -> Result:
        """One remote-control command: pool_restart, pool_grow/pool_shrink (n), autoscale
        (max, min), add_consumer/cancel_consumer (queue), rate_limit (task_name, rate),
        time_limit (task_name, soft, hard)."""
        return self._call(
            "control_workers",
            command=command,
            destination=destination,
            timeout_s=timeout_s,
            confirm=confirm,
            **arguments,
        )

    def pool_restart(
        self,
        destination: list[str] | None = None,
        *,
        timeout_s: float | None = None,
        confirm: bool = False,
    ) -> Result:
        """Replace every pool process (prefork workers); a dry run unless confirm=True."""
        return self.control_workers(
            "pool_restart", destination, timeout_s=timeout_s, confirm=confirm
        )

    def shutdown_workers(
        self,
        destination: list[str] | None = None,
        *,
        confirm: bool = False,
        wait_s: float = 10.0,
        timeout_s: float | None = None,
    ) -> Result:
        """Warm-stop workers (all of them when destination is None); a dry run unless
        confirm=True; waits up to wait_s for them to leave."""
        return self._call(
            "shutdown_workers",
            destination=destination,
            confirm=confirm,
            wait_s=wait_s,
            timeout_s=timeout_s,
        )


#: A workflow step: "demo.noop", ("demo.add", [2, 3]), ("demo.echo", [], {"k": 1}), or a dict
#: with task_name, args, kwargs and send_task options (the WorkflowStep model's fields).
Step = str | tuple[Any, ...] | list[Any] | dict[str, Any]

WORKFLOW_WAIT_SLICE_S = 1.0


def _step(step: Step) -> dict[str, Any]:
    """A WorkflowStep's fields from the short forms above."""
    if isinstance(step, str):
        return {"task_name": step}
    if isinstance(step, dict):
        return step
    if isinstance(step, tuple | list) and step and isinstance(step[0], str) and len(step) <= 3:
        fields: dict[str, Any] = {"task_name": step[0]}
        if len(step) > 1:
            fields["args"] = step[1]
        if len(step) > 2:
            fields["kwargs"] = step[2]
        return fields
    raise InvalidArgument(
        f"bad workflow step {step!r}",
        hint="give 'task.name', ('task.name', [args]), ('task.name', [args], {kwargs}) or a dict",
    )


class WorkflowHandle:
    """A workflow that was started: `.id`, `.ready()`, `.results`, `.result`, `.get(timeout)`.

    `.data` is what the workflow tool returned (workflow_id, task_count, group_id, message,
    ...); the rest reads the workflow back with get_workflow and get_result.
    """

    def __init__(self, skill: CelerySkill, kind: str, data: Result) -> None:
        self._call: Call = skill._call
        self.data = data
        self.kind = kind  # chain, group, chord or map
        self.id: str | None = data.get("workflow_id")

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.kind} {self.id}>"

    def _id(self) -> str:
        if self.id is None:
            raise InvalidArgument("a dry run has no workflow to read", hint="see .data['canvas']")
        return self.id

    def tree(self, *, states: list[str] | None = None, offset: int = 0, limit: int = 50) -> Result:
        """get_workflow: each task's state and result or error, counts, where it failed."""
        return self._call(
            "get_workflow", workflow_id=self._id(), states=states, offset=offset, limit=limit
        )

    def ready(self) -> bool:
        """True when nothing more will run (finished, or a chain stopped at a failed step)."""
        return bool(self.tree(limit=1)["ready"])

    @property
    def results(self) -> list[Any]:
        """Each step's or parallel task's result, in order (None where not SUCCESS yet)."""
        out: list[Any] = []
        offset = 0
        while True:
            page = self.tree(offset=offset, limit=500)
            out += [node["result"] for node in page["nodes"]]
            if not page["more"]:
                return out
            offset += len(page["nodes"])

    @property
    def result(self) -> Any:
        """The final result: the chord callback's, the chain's last step's, or the list of a
        group's results; None until it succeeded."""
        return self.tree(limit=1)["result"]

    def get(self, timeout: float = 10.0) -> Result:
        """Wait up to `timeout` seconds until ready; return the workflow tree (state, result,
        error, nodes, ...). Raises WaitTimeout when it is not ready in time."""
        workflow_id = self._id()
        deadline = time.monotonic() + timeout
        while True:
            tree = self.tree()
            if tree["ready"]:
                return tree
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"workflow {workflow_id} not ready after {timeout:.1f}s: {tree['counts']}",
                    hint="call get() again, or tree() to see which tasks are pending",
                )
            # a pub/sub wait on the final id, so it returns as soon as that finishes
            self._call(
                "get_result", task_id=workflow_id, timeout_s=min(WORKFLOW_WAIT_SLICE_S, remaining)
            )


class WorkflowManager:
    """Workflows: chain, group, chord, map (steps as in `Step`); each returns a WorkflowHandle."""

    def __init__(self, skill: CelerySkill) -> None:
        self._skill = skill
        self._call: Call = skill._call

    def _step(self, step: Step) -> dict[str, Any]:
        """The step's fields; a function registered here goes to this facade's queue.

        A step after the first (chain) or a chord callback is sent by the worker that ran the
        step before it, with that worker's routing: the queue must travel in the signature.
        """
        fields = _step(step)
        if fields.get("task_name") in self._skill._registered and not fields.get("queue"):
            fields = {**fields, "queue": self._skill.local_queue}
        return fields

    def _handle(self, op_name: str, **fields: Any) -> WorkflowHandle:
        kind = op_name.split("_")[0]
        return WorkflowHandle(self._skill, kind, self._call(op_name, **fields))

    def chain_tasks(self, steps: list[Step], *, dry_run: bool = False) -> WorkflowHandle:
        """Run steps one after another, each getting the previous result first (unless
        immutable); a failed step stops the chain."""
        return self._handle("chain_tasks", steps=[self._step(s) for s in steps], dry_run=dry_run)

    def group_tasks(self, tasks: list[Step], *, dry_run: bool = False) -> WorkflowHandle:
        """Run tasks in parallel; `.results` lists their results."""
        return self._handle("group_tasks", tasks=[self._step(s) for s in tasks], dry_run=dry_run)

    def chord_workflow(
        self, header: list[Step], callback: Step, *, dry_run: bool = False
    ) -> WorkflowHandle:
        """Run header tasks in parallel, then `callback` on the list of their results."""
        return self._handle(
            "chord_workflow",
            header=[self._step(s) for s in header],
            callback=self._step(callback),
            dry_run=dry_run,
        )

    def map_task(
        self,
        task_name: str,
        items: list[list[Any]],
        *,
        options: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        chord_callback: Step | None = None,
        validate_args: bool = True,
        dry_run: bool = False,
    ) -> WorkflowHandle:
        """Run `task_name` once per args list in `items` (optionally chunked), optionally
        with a chord_callback on all results."""
        if task_name in self._skill._registered and not (options or {}).get("queue"):
            options = {**(options or {}), "queue": self._skill.local_queue}
        return self._handle(
            "map_task",
            task_name=task_name,
            items=items,
            options=options,
            chunk_size=chunk_size,
            chord_callback=None if chord_callback is None else self._step(chord_callback),
            validate_args=validate_args,
            dry_run=dry_run,
        )

    def get_workflow(
        self,
        workflow_id: str,
        *,
        states: list[str] | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Result:
        """A workflow's tree by id (as returned in a handle's `.id`)."""
        return self._call(
            "get_workflow", workflow_id=workflow_id, states=states, offset=offset, limit=limit
        )


class Scheduler:
    """Periodic tasks in the schedule store (run by `celery-mcp beat`).

    A schedule is one of `every` (seconds, or {days, hours, minutes, seconds}), `crontab` (a
    5-field string or `crontab(...)`) or `run_at` (one run at an aware datetime).
    """

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    #: A validated crontab schedule to pass as `crontab=` (raises InvalidArgument).
    crontab = staticmethod(schedule_rules.crontab)

    def add_periodic_task(
        self,
        name: str,
        task_name: str,
        *,
        every: Any = None,
        crontab: Any = None,
        run_at: Any = None,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Result:
        """Add entry `name` running `task_name` on a schedule; options: queue, priority,
        expires_s, enabled, validate_args."""
        return self._call(
            "add_periodic_task",
            name=name,
            task_name=task_name,
            every=every,
            crontab=crontab,
            run_at=run_at,
            args=args,
            kwargs=kwargs,
            **options,
        )

    def list_periodic_tasks(self, **filters: Any) -> Result:
        """Entries with their schedules and next run; filters: enabled, task_name, offset, limit."""
        return self._call("list_periodic_tasks", **filters)

    def get_periodic_task(self, name: str) -> Result:
        """One entry in full."""
        return self._call("get_periodic_task", name=name)

    def update_periodic_task(self, name: str, **changes: Any) -> Result:
        """Change an entry; fields left out stay as they are."""
        return self._call("update_periodic_task", name=name, **changes)

    def enable_periodic_task(self, name: str) -> Result:
        """Let beat run the entry again."""
        return self._call("enable_periodic_task", name=name)

    def disable_periodic_task(self, name: str) -> Result:
        """Keep the entry but stop beat from running it."""
        return self._call("disable_periodic_task", name=name)

    def remove_periodic_task(self, name: str, *, confirm: bool = False) -> Result:
        """Delete the entry (a dry run unless confirm=True)."""
        return self._call("remove_periodic_task", name=name, confirm=confirm)

    def run_periodic_task_now(self, name: str) -> Result:
        """Send the entry's task once now, outside its schedule."""
        return self._call("run_periodic_task_now", name=name)


class History:
    """Task history recorded from Celery events (by `celery-mcp monitor` or `worker --monitor`)."""

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call

    def list_tasks(self, **filters: Any) -> Result:
        """Recorded tasks, newest first; filters: state (list), task_name, worker, queue,
        within_s, since, until, limit, cursor."""
        return self._call("list_tasks", **filters)

    def get_task(self, task_id: str) -> Result:
        """Everything known about one task: args, timeline, result or exception, links."""
        return self._call("get_task", task_id=task_id)

    def retry_task(self, task_id: str) -> Result:
        """Re-send a FAILURE or REVOKED task with its original name, args and queue."""
        return self._call("retry_task", task_id=task_id)

    def retry_failed(self, *, confirm: bool = False, **filters: Any) -> Result:
        """Re-send recent FAILURE tasks (task_name, within_s, max_tasks, ...); a dry run
        unless confirm=True."""
        return self._call("retry_failed", confirm=confirm, **filters)


class CelerySkill:
    """Operate a Celery cluster from Python: the MCP tools as methods returning dicts."""

    def __init__(
        self, broker_url: str | None = None, result_backend: str | None = None, **settings: Any
    ) -> None:
        overrides = {"broker_url": broker_url, "result_backend": result_backend, **settings}
        unknown = sorted(set(settings) - set(Settings.model_fields))
        if unknown:
            raise InvalidArgument(
                f"unknown setting(s) {', '.join(unknown)}",
                hint=f"one of {', '.join(Settings.model_fields)}",
            )
        try:
            self.settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise InvalidArgument(validation_message(exc), hint="see celery_mcp.Settings") from None
        self.cluster = Cluster(self.settings)
        self.app: Any = self.cluster.app
        #: Queue for tasks registered here: only this facade's local worker consumes it.
        self.local_queue = (
            f"celery_mcp.local.{socket.gethostname()}.{os.getpid()}.{next(_instances)}"
        )
        self._registered: dict[str, Callable[..., Any]] = {}
        self._worker: LocalWorker | None = None
        self._worker_app: Any = None
        self._closed = False
        self._install_router()

    # -- the one funnel into the service layer ------------------------------------------------

    def _operation(self, name: str) -> Operation:
        op = load_operations().get(name)
        if op is None:
            raise NotFound(
                f"operation {name!r} is not available in this version",
                hint="celery_mcp.service.registry.load_operations() lists the operations",
            )
        if self.settings.read_only and not op.read_only:
            raise Forbidden(f"{name} changes state and read_only is set", hint="unset read_only")
        return op

    def _call(self, op_name: str, **fields: Any) -> Result:
        """Validate `fields` with the operation's input model, run it, dump its output."""
        op = self._operation(op_name)
        try:
            request = op.input_model.model_validate(
                {k: v for k, v in fields.items() if v is not None}
            )
        except ValidationError as exc:
            raise InvalidArgument(
                f"{op_name}: {validation_message(exc)}", hint=f"{op.name}: {op.description}"
            ) from None
        result = op.func(self.cluster, request)
        return result.model_dump(mode="json")

    # -- toolsets ---------------------------------------------------------------------------

    def health_check(self, include_workers: bool = True) -> Result:
        """Broker, result backend, workers, beat and schedule store, each bounded."""
        return self._call("health", include_workers=include_workers)

    def diagnose(
        self,
        *,
        window_s: float = 3600,
        stuck_after_s: float | None = None,
        stuck_multiple: float = 5.0,
        max_wait_s: float = 300,
    ) -> Result:
        """Find what is wrong (queues nobody consumes, lost workers, stuck tasks, failure rates,
        long waits, beat, risky settings); findings ranked, each with the next call."""
        return self._call(
            "diagnose",
            window_s=window_s,
            stuck_after_s=stuck_after_s,
            stuck_multiple=stuck_multiple,
            max_wait_s=max_wait_s,
        )

    def task_manager(self) -> TaskManager:
        """Send tasks and read their results."""
        return TaskManager(self)

    def worker_manager(self) -> WorkerManager:
        """Inspect and control workers."""
        return WorkerManager(self)

    def workflow(self) -> WorkflowManager:
        """Chains, groups, chords and maps."""
        return WorkflowManager(self)

    def scheduler(self) -> Scheduler:
        """Periodic tasks."""
        return Scheduler(self)

    def history(self) -> History:
        """Task history: list, inspect and retry past tasks."""
        return History(self)

    # -- local tasks and worker -------------------------------------------------------------

    def _install_router(self) -> None:
        """Route tasks registered here to `local_queue` (unless a queue is given)."""
        registered = self._registered
        queue = self.local_queue

        def route(name: str, *args: Any, **kwargs: Any) -> dict[str, str] | None:
            return {"queue": queue} if name in registered else None

        existing = self.app.conf.task_routes
        if existing is None:
            existing = ()
        elif not isinstance(existing, list | tuple):
            existing = (existing,)
        self.app.conf.update(task_routes=(route, *existing))

    def register_task(self, fn: Callable[..., Any], name: str) -> Any:
        """Register `fn` under `name` on this facade's app (and its local worker); return the
        Celery task. Send it by name like any task; start_worker() runs it."""
        from pydantic import TypeAdapter

        from celery_mcp.models.common import TaskName

        try:
            TypeAdapter(TaskName).validate_python(name)
        except ValidationError as exc:
            raise InvalidArgument(f"task name {name!r}: {validation_message(exc)}") from None
        if not callable(fn):
            raise InvalidArgument(f"register_task needs a callable, got {type(fn).__name__}")
        fn = nameable(fn, name)
        self._registered[name] = fn
        task = self.app.task(name=name, lazy=False)(fn)
        if self._worker_app is not None and self._worker_app is not self.app:
            self._register_on_worker(name, fn)
        if self._worker is not None:
            self._worker.refresh()
        with self.cluster.lock:  # the app's task list is cached: let send_task see the new name
            self.cluster.cache.pop("app_tasks", None)
        return task

    def _register_on_worker(self, name: str, fn: Callable[..., Any]) -> None:
        from celery_mcp import retry_policy

        retry_policy.wrap_task(self._worker_app.task(name=name, lazy=False)(fn))

    def start_worker(
        self,
        *,
        concurrency: int = 4,
        pool: str = "threads",
        queues: list[str] | None = None,
        hostname: str | None = None,
    ) -> str:
        """Start a real Celery worker in a thread of this process; return its hostname.

        It runs the demo tasks, your `--app`'s tasks and every function given to
        register_task, consuming the default queue, this facade's local queue and `queues`.
        Stopped by close() or leaving the `with` block. pool: 'threads' or 'solo'.
        """
        global _local_worker
        if pool not in ("threads", "solo"):
            raise InvalidArgument(
                f"pool {pool!r} cannot run inside this process; use 'threads' or 'solo'",
                hint="for prefork run `celery-mcp worker` in a shell",
            )
        if self._worker is not None and self._worker.alive:
            return self._worker.hostname
        from celery_mcp.service.health import check_broker

        broker = check_broker(self.cluster)
        if not broker.ok:
            raise BrokerUnavailable(broker.detail, hint="check broker_url, or call health_check()")
        with _LOCAL_WORKER_LOCK:
            if _local_worker is not None and _local_worker.alive:
                raise InvalidArgument(
                    f"a local worker ({_local_worker.hostname}) already runs in this process",
                    hint="close the CelerySkill that started it first",
                )
            app = self._make_worker_app()
            default_queue = str(self.app.conf.task_default_queue)
            worker = LocalWorker(
                app,
                hostname=hostname or f"skill-{os.getpid()}@{socket.gethostname()}",
                queues=list(dict.fromkeys([default_queue, self.local_queue, *(queues or [])])),
                pool=pool,
                concurrency=concurrency,
            )
            worker.start()
            _local_worker = self._worker = worker
        return worker.hostname

    def _make_worker_app(self) -> Any:
        """The worker's app: a worker-profile app (reconnects forever) unless --app is used."""
        from celery_mcp import retry_policy
        from celery_mcp.app import make_app

        if self._worker_app is None:
            self._worker_app = (
                self.app if self.settings.app else make_app(self.settings, worker=True)
            )
            if self._worker_app is not self.app:
                self._worker_app.conf.update(task_routes=self.app.conf.task_routes)
                for name, fn in self._registered.items():
                    self._register_on_worker(name, fn)
            retry_policy.install(self._worker_app)
            from celery_mcp import worker_control  # noqa: F401 (answers the catalog's specs call)
        return self._worker_app

    def stop_worker(self) -> None:
        """Stop the local worker, if one runs (running tasks finish first, within a bound)."""
        global _local_worker
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.stop()
        with _LOCAL_WORKER_LOCK:
            if _local_worker is worker:
                _local_worker = None

    def close(self) -> None:
        """Stop the local worker and release broker connections (the embedded server stays)."""
        if self._closed:
            return
        self._closed = True
        self.stop_worker()
        for app in {id(a): a for a in (self.app, self._worker_app) if a is not None}.values():
            with contextlib.suppress(Exception):  # closing is best effort
                app.close()
        client = self.cluster.__dict__.get("broker_redis")
        if client is not None:
            client.close()

    def __enter__(self) -> CelerySkill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
