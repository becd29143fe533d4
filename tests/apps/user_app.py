"""A user's own app, configured the way real apps are, one setting at a time (from the env).

    USER_BROKER_URL / USER_RESULT_BACKEND   its broker and backend ("none": no result backend)
    USER_KEYPREFIX                          broker + backend `global_keyprefix` (e.g. "proj:")
    USER_VISIBILITY_S                       the Redis `visibility_timeout`
    USER_SEP                                the Redis `sep` (key of a priority: queue + sep + step)
    USER_PRIORITY_STEPS                     its `priority_steps` ("0,4,9")
    USER_MASTER_NAME                        Sentinel's `master_name` (broker and backend: sentinel://)
    USER_LOG_KEY                            Redis list the tasks append what they did to
    USER_PRIORITY_QUEUES                    queues declared with x-max-priority 9 ("a,b")

A stock `celery -A tests.apps.user_app:app worker` runs it; the server imports it with --app.
No `result_extended`, no task events unless the worker is started with -E: Celery's defaults.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery, states
from celery.exceptions import Ignore, Reject
from kombu import Queue

backend = os.environ.get("USER_RESULT_BACKEND") or None
app = Celery(
    "user",
    broker=os.environ.get("USER_BROKER_URL"),
    backend=None if backend == "none" else backend,
    set_as_current=False,
)
transport: dict[str, Any] = {}
backend_options: dict[str, Any] = {}
shared = {"USER_KEYPREFIX": "global_keyprefix", "USER_MASTER_NAME": "master_name"}
for variable, option in shared.items():  # options the broker and the backend both read
    if os.environ.get(variable):
        transport[option] = backend_options[option] = os.environ[variable]
if os.environ.get("USER_VISIBILITY_S"):
    transport["visibility_timeout"] = float(os.environ["USER_VISIBILITY_S"])
if os.environ.get("USER_SEP"):
    transport["sep"] = os.environ["USER_SEP"]
if os.environ.get("USER_PRIORITY_STEPS"):
    transport["priority_steps"] = [int(s) for s in os.environ["USER_PRIORITY_STEPS"].split(",")]
if os.environ.get("USER_PRIORITY_QUEUES"):
    names = os.environ["USER_PRIORITY_QUEUES"].split(",")
    app.conf.task_queues = [Queue("celery")] + [
        Queue(n, routing_key=n, queue_arguments={"x-max-priority": 9}) for n in names
    ]
app.conf.update(
    broker_transport_options=transport,
    result_backend_transport_options=backend_options,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
)


def _log(entry: str) -> None:
    key = os.environ.get("USER_LOG_KEY")
    url = os.environ.get("USER_LOG_URL") or os.environ.get("USER_BROKER_URL")
    if key and url:
        redis.Redis.from_url(url).rpush(key, entry)


@app.task(name="user.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="user.total")
def total(values: list[int], extra: int = 0) -> int:
    """A chord callback: the sum of its header's results."""
    return sum(values) + extra


@app.task(name="user.record")
def record(tag: str) -> str:
    """Append `tag` to the log list: the order tasks ran in."""
    _log(tag)
    return tag


@app.task(name="user.fail")
def fail(message: str, count: int = 1) -> None:
    raise RuntimeError(f"{message} x{count}")


@app.task(name="user.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="user.progress", bind=True)
def progress(self: Any, steps: int, pause_s: float = 0.5) -> int:
    """Report a custom PROGRESS state (with meta) at every step."""
    for done in range(steps):
        self.update_state(state="PROGRESS", meta={"done": done, "of": steps})
        time.sleep(pause_s)
    return steps


@app.task(name="user.reject")
def reject() -> None:
    raise Reject("not for this worker", requeue=False)


@app.task(name="user.ignored", bind=True)
def ignored(self: Any) -> None:
    """Store IGNORED, then tell the worker to store nothing more (a task that hands its work on)."""
    self.update_state(state=states.IGNORED)
    raise Ignore()
