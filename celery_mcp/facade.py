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
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
import re
import socket
import threading
import types
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from celery_mcp.config import Settings
from celery_mcp.errors import (
    BrokerUnavailable,
    Forbidden,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.registry import Operation, load_operations

__all__ = [
    "CelerySkill",
    "LocalWorker",
    "Scheduler",
    "TaskManager",
    "WorkerManager",
    "WorkflowHandle",
    "WorkflowManager",
]

Result = dict[str, Any]
Call = Callable[..., Result]

WORKER_START_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 15.0

_LOCAL_WORKER_LOCK = threading.Lock()
_local_worker: LocalWorker | None = None
_instances = itertools.count(1)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _nameable(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`fn`, or a copy with an identifier for a name (Celery cannot wrap `<lambda>`)."""
    if not inspect.isfunction(fn) or fn.__name__.isidentifier():
        return fn
    ident = re.sub(r"\W", "_", name.rpartition(".")[2]) or "task"
    ident = ident if ident.isidentifier() else f"task_{ident}"
    clone = types.FunctionType(fn.__code__, fn.__globals__, ident, fn.__defaults__, fn.__closure__)
    clone.__kwdefaults__ = fn.__kwdefaults__
    clone.__qualname__ = ident
    clone.__module__ = fn.__module__
    clone.__doc__ = fn.__doc__
    return clone


class LocalWorker:
    """A real Celery worker (threads pool) running in a daemon thread of this process."""

    def __init__(
        self, app: Any, *, hostname: str, queues: list[str], pool: str, concurrency: int
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.queues = queues
        self.pool = pool
        self.concurrency = concurrency
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._controller: Any = None
        self._previous_default_app: Any = None

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        """Start consuming; return once the worker is ready (raise `Unavailable` if it is not)."""
        from celery import _state
        from celery.app import trace
        from celery.result import _set_task_join_will_block
        from celery.worker import state

        state.should_stop = None
        state.should_terminate = None
        # Pool threads start without a current app and would run tasks on Celery's default app
        # (no backend): make the worker's app the process default, as `celery worker` does.
        self._previous_default_app = _state.default_app
        trace.setup_worker_optimizations(self.app, self.hostname)
        self._controller = self.app.WorkController(
            hostname=self.hostname,
            queues=self.queues,
            pool=self.pool,
            concurrency=self.concurrency,
            loglevel="WARNING",
            ready_callback=lambda consumer: self._ready.set(),
            without_mingle=True,
            without_gossip=True,
            task_events=True,
        )
        self._thread = threading.Thread(
            target=self._controller.start, name=f"celery-mcp-worker-{self.hostname}", daemon=True
        )
        self._thread.start()
        ready = self._ready.wait(timeout_s)
        # Starting a worker marks the process as "inside a task" (result.get() refused); this
        # process is also the caller, so allow joins again, as celery.contrib.testing does.
        _set_task_join_will_block(False)
        if not ready or not self.alive:
            self.stop()
            raise Unavailable(
                f"local worker {self.hostname} did not become ready within {timeout_s:.0f}s",
                hint="check the broker with health_check(), or run `celery-mcp worker` instead",
            )

    def stop(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> None:
        """Warm shutdown (running tasks finish), cold after `timeout_s`; wait for the thread."""
        from celery import _state
        from celery.app import trace
        from celery.worker import state

        thread = self._thread
        if thread is None:
            return
        state.should_stop = 0  # the consumer loop checks this flag and shuts down warmly
        thread.join(timeout_s)
        if thread.is_alive():
            state.should_terminate = 0
            thread.join(5.0)
        state.should_stop = None
        state.should_terminate = None
        self._thread = None
        trace.reset_worker_optimizations(self.app)
        _state.set_default_app(self._previous_default_app)


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


class WorkerManager:
    """Workers: inspect, ping, active and registered tasks, control, shutdown."""

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call


class WorkflowHandle:
    """A workflow that was started: its id, readiness and results."""

    def __init__(self, skill: CelerySkill, data: Result) -> None:
        self._skill = skill
        self.data = data


class WorkflowManager:
    """Workflows: chain, group, chord, map."""

    def __init__(self, skill: CelerySkill) -> None:
        self._skill = skill
        self._call: Call = skill._call


class Scheduler:
    """Periodic tasks (RedBeat schedule store)."""

    def __init__(self, skill: CelerySkill) -> None:
        self._call: Call = skill._call


class CelerySkill:
    """Operate a Celery cluster from Python: the MCP tools as methods returning dicts."""

    def __init__(
        self, broker_url: str | None = None, result_backend: str | None = None, **settings: Any
    ) -> None:
        overrides = {"broker_url": broker_url, "result_backend": result_backend, **settings}
        try:
            self.settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise InvalidArgument(
                _validation_message(exc), hint="see celery_mcp.Settings"
            ) from None
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
                f"{op_name}: {_validation_message(exc)}", hint=f"{op.name}: {op.description}"
            ) from None
        result = op.func(self.cluster, request)
        return result.model_dump(mode="json")

    # -- toolsets ---------------------------------------------------------------------------

    def health_check(self, include_workers: bool = True) -> Result:
        """Broker, result backend, workers, beat and schedule store, each bounded."""
        return self._call("health", include_workers=include_workers)

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
            raise InvalidArgument(f"task name {name!r}: {_validation_message(exc)}") from None
        if not callable(fn):
            raise InvalidArgument(f"register_task needs a callable, got {type(fn).__name__}")
        fn = _nameable(fn, name)
        self._registered[name] = fn
        task = self.app.task(name=name, lazy=False)(fn)
        if self._worker_app is not None and self._worker_app is not self.app:
            self._register_on_worker(name, fn)
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
