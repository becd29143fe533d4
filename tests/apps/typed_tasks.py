"""A user app of typed tasks for the catalog tests: `celery-mcp worker/serve --app` this module.

Its default queue is `typed`, so these tasks never reach the demo worker on `celery`. The broker
and backend come from CELERY_MCP_BROKER_URL / CELERY_MCP_RESULT_BACKEND (the test's Valkey).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from pydantic import BaseModel, Field

app = Celery(
    "typed",
    broker=os.environ.get("CELERY_MCP_BROKER_URL"),
    backend=os.environ.get("CELERY_MCP_RESULT_BACKEND"),
    set_as_current=False,
)
app.conf.update(
    task_default_queue="typed",
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_extended=True,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
)


class Point(BaseModel):
    """A point on the plane."""

    x: int = Field(description="Horizontal coordinate.")
    y: int = 0


@app.task(name="typed.add")
def add(x: int, y: int) -> int:
    """Add two integers.

    Both must be integers; strings are refused before sending.
    """
    return x + y


@app.task(name="typed.greet")
def greet(name: str, punctuation: str = "!", times: int | None = None) -> str:
    """Greet someone by name, optionally several times."""
    return " ".join([f"hello {name}{punctuation}"] * (times or 1))


@app.task(name="typed.total")
def total(numbers: list[int]) -> int:
    """Sum a list of integers."""
    return sum(numbers)


@app.task(name="typed.norm", pydantic=True)
def norm(point: Point, scale: float = 1.0) -> float:
    """Manhattan norm of a point, scaled."""
    return (abs(point.x) + abs(point.y)) * scale


@app.task(name="typed.collect")
def collect(first: str, *rest: int, **options: Any) -> dict[str, Any]:
    """Return its arguments: one string, then any integers and any options."""
    return {"first": first, "rest": list(rest), "options": options}


@app.task(name="typed.whoami", bind=True)
def whoami(self: Any, tag: str = "") -> str:
    """Return the task id with a tag (a bound task)."""
    return f"{tag}:{self.request.id}"


@app.task(
    name="typed.fragile",
    autoretry_for=(ValueError, KeyError),
    max_retries=3,
    default_retry_delay=2,
    acks_late=True,
    time_limit=30,
    soft_time_limit=20,
    rate_limit="10/s",
)
def fragile(key: str, fail: bool = False) -> str:
    """Fail with ValueError when asked to; retried automatically."""
    if fail:
        raise ValueError(key)
    return key


@app.task(name="typed.untyped")
def untyped(a, b=2):  # type: ignore[no-untyped-def]
    """No annotations at all."""
    return [a, b]
