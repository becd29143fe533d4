"""A user's app whose import is slow (20 s): the server must answer initialize and tools/list
without importing it (the first tool call does)."""

from __future__ import annotations

import time

from celery import Celery

time.sleep(20)
app = Celery("slow", broker="redis://127.0.0.1:9/0", set_as_current=False)


@app.task(name="slow.noop")
def noop() -> None:
    """Do nothing."""
