"""A real Celery worker (threads or solo pool) running in a daemon thread of this process.

The facade's `start_worker()` uses it so that functions given to `register_task` run as they
are (closures, lambdas, `__main__`), with no importable module path. No prefork pool here:
terminate and pool_restart need `celery-mcp worker`. One per process: Celery keeps worker
shutdown flags in module globals.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from celery import _state
from celery.app import trace
from celery.result import _set_task_join_will_block
from celery.worker import state

from celery_mcp.errors import Unavailable

WORKER_START_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 15.0
PING_WAIT_S = 0.5


def nameable(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
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
        deadline = time.monotonic() + timeout_s
        ready = self._ready.wait(timeout_s) and self._answers_ping(deadline)
        # Starting a worker marks the process as "inside a task" (result.get() refused); this
        # process is also the caller, so allow joins again, as celery.contrib.testing does.
        _set_task_join_will_block(False)
        if not ready or not self.alive:
            self.stop()
            raise Unavailable(
                f"local worker {self.hostname} did not become ready within {timeout_s:.0f}s",
                hint="check the broker with health_check(), or run `celery-mcp worker` instead",
            )

    def _answers_ping(self, deadline: float) -> bool:
        """Wait (until `deadline`) for the worker to answer its own ping.

        The consumer is "ready" before a Redis transport has subscribed its control channel:
        a broadcast sent in between is lost, so `ping_workers()` right after `start_worker()`
        would not see it.
        """
        while self.alive and time.monotonic() < deadline:
            wait_s = min(PING_WAIT_S, max(deadline - time.monotonic(), 0.01))
            if self.app.control.ping([self.hostname], timeout=wait_s, limit=1):
                return True
        return False

    def refresh(self) -> None:
        """Let a running worker accept tasks registered after it started."""
        consumer = getattr(self._controller, "consumer", None)
        if self.alive and consumer is not None:
            consumer.update_strategies()

    def stop(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> None:
        """Warm shutdown (running tasks finish), cold after `timeout_s`; wait for the thread."""
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
