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
from collections.abc import Callable
from typing import Any

from kombu.entity import Queue
from pydantic import TypeAdapter, ValidationError

from celery_mcp.app import make_app
from celery_mcp.config import Settings
from celery_mcp.errors import BrokerUnavailable, InvalidArgument, validation_message
from celery_mcp.interfaces.facade.handles import TaskHandle, WorkflowHandle
from celery_mcp.interfaces.facade.history import History
from celery_mcp.interfaces.facade.scheduler import Scheduler
from celery_mcp.interfaces.facade.tasks import TaskManager
from celery_mcp.interfaces.facade.types import Result
from celery_mcp.interfaces.facade.workers import WorkerManager
from celery_mcp.interfaces.facade.workflows import WorkflowManager
from celery_mcp.models.common import TaskName
from celery_mcp.runtime.connect import open_cluster
from celery_mcp.runtime.worker import retry, setup
from celery_mcp.runtime.worker.local import LocalWorker, nameable
from celery_mcp.service import funnel
from celery_mcp.service.health import check_broker

__all__ = [
    "CelerySkill",
    "History",
    "LocalWorker",
    "Scheduler",
    "TaskManager",
    "WorkerManager",
    "TaskHandle",
    "WorkflowHandle",
    "WorkflowManager",
]

_LOCAL_WORKER_LOCK = threading.Lock()
_local_worker: LocalWorker | None = None
_instances = itertools.count(1)


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
        self.cluster = open_cluster(self.settings)
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

    def _call(self, op_name: str, **fields: Any) -> Result:
        """Run one operation through the funnel (policy, validation); its output as a dict.

        Fields given as None are left out, so the operation's defaults apply."""
        given = {k: v for k, v in fields.items() if v is not None}
        return funnel.invoke(op_name, self.cluster, given, "python").model_dump(mode="json")

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
        self._declare_local_queue(self.app)

    def _declare_local_queue(self, app: Any) -> None:
        """Make `local_queue` go away with this process: on RabbitMQ it is auto-deleted when
        the local worker stops consuming (a Redis list is gone once empty anyway)."""
        name = self.local_queue
        queue = Queue(name, routing_key=name, durable=False, auto_delete=True)  # type: ignore[no-untyped-call]
        app.amqp.queues.add(queue)

    def register_task(self, fn: Callable[..., Any], name: str) -> Any:
        """Register `fn` under `name` on this facade's app (and its local worker); return the
        Celery task. Send it by name like any task; start_worker() runs it."""
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
        self.cluster.forget_app_tasks()  # let send_task see the new name
        return task

    def _register_on_worker(self, name: str, fn: Callable[..., Any]) -> None:
        retry.wrap_task(self._worker_app.task(name=name, lazy=False)(fn))

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
        if self._worker_app is None:
            self._worker_app = (
                self.app if self.settings.app else make_app(self.cluster.settings, worker=True)
            )
            if self._worker_app is not self.app:
                self._worker_app.conf.update(task_routes=self.app.conf.task_routes)
                for name, fn in self._registered.items():
                    self._register_on_worker(name, fn)
            setup.prepare(self._worker_app)
            self._declare_local_queue(self._worker_app)
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
        with contextlib.suppress(Exception):  # closing is best effort
            self.cluster.close()
        if self._worker_app is not None and self._worker_app is not self.app:
            with contextlib.suppress(Exception):
                self._worker_app.close()

    def __enter__(self) -> CelerySkill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
