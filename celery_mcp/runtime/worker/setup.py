"""One setup for every worker this project starts (`celery-mcp worker`, `CelerySkill.start_worker`).

A stock `celery worker` of the same app runs the same tasks; these additions make a worker
honour the retry headers, answer the catalog's signature command, apply new time limits at
once, restart its pool on request and survive a broker restart while holding late-acked tasks.
"""

from __future__ import annotations

from celery import Celery

from celery_mcp.runtime.worker import commands, kombu_fixes, retry


def prepare(app: Celery) -> None:
    """Install every addition on `app` before its worker starts serving (idempotent)."""
    app.conf.worker_pool_restarts = True  # lets the pool_restart control command work
    retry.install(app)
    kombu_fixes.install()  # survive a broker restart while holding acks_late tasks
    commands.task_specs(app)  # importing `commands` registered the control commands
