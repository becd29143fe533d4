"""An app for a plain `celery worker` (not celery-mcp): its tasks' signatures are unknown."""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "plain",
    broker=os.environ.get("CELERY_MCP_BROKER_URL"),
    backend=os.environ.get("CELERY_MCP_RESULT_BACKEND"),
    set_as_current=False,
)
app.conf.update(task_default_queue="plain", broker_connection_retry_on_startup=True)


@app.task(name="plain.mystery")
def mystery(value: int) -> int:
    """Known only to a plain celery worker."""
    return value
