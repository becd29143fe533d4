"""A user's own app for the bench, with Celery's defaults (no result_extended, no task-sent
events, no celery-mcp worker): `serve --app bench.user_app:app` and a stock
`celery -A bench.user_app:app worker` run it. Broker and backend come from BENCH_USER_BROKER
and BENCH_USER_BACKEND."""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "bench_user",
    broker=os.environ.get("BENCH_USER_BROKER"),
    backend=os.environ.get("BENCH_USER_BACKEND"),
    set_as_current=False,
)
app.conf.broker_connection_retry_on_startup = True


@app.task(name="user.noop")
def noop() -> None:
    """Do nothing."""


@app.task(name="user.add")
def add(x: int, y: int) -> int:
    """x + y."""
    return x + y
