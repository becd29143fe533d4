"""Catalog: which tasks the cluster can run and how to call them; args checked before send.

Two sources, merged by task name. The imported app: specs derived once per process from the
task functions. Live workers: each `celery-mcp worker` answers the `mcp_task_specs` control
command with its specs (see `celery_mcp.worker_control`); a plain `celery worker` answers it
with an error, so its task names come from `inspect().registered()` and their signatures are
unknown. Worker answers are cached for a few seconds, like `discovery.worker_task_names`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from celery_mcp.models.catalog import (
    DescribeTaskInput,
    ListTaskTypesInput,
    Source,
    TaskDescription,
    TaskSpec,
    TaskTypeList,
    TaskTypeSummary,
)
from celery_mcp.service import discovery
from celery_mcp.service.cluster import Cluster, Stamped
from celery_mcp.service.discovery import expected_workers, unknown_task
from celery_mcp.service.signatures import check_call, task_spec
from celery_mcp.stores.keys import SPECS_COMMAND

log = logging.getLogger("celery_mcp.catalog")

WORKER_SPECS_TTL_S = 5.0
REFRESH_ON_MISS_S = 0.5
_GLOB_CHARS = set("*?[")


@dataclass
class WorkerView:
    """What live workers reported: who has which task, and the specs celery-mcp workers sent."""

    at: float = 0.0
    hosts: dict[str, set[str]] = field(default_factory=dict)  # task name -> hostnames
    specs: dict[str, TaskSpec] = field(default_factory=dict)
    answered: int = 0


# -- sources ----------------------------------------------------------------------------------


def app_spec(cluster: Cluster, name: str) -> TaskSpec | None:
    """The spec of `name` from the imported app (derived once), or None if it has no such task."""
    if name not in cluster.app_task_names():
        return None
    cached = cluster.app_specs
    if name not in cached:
        try:
            cached[name] = task_spec(cluster.app.tasks[name])
        except Exception:  # an odd task object: listed, its signature unknown
            log.warning("cannot describe task %s", name, exc_info=True)
            cached[name] = TaskSpec(name=name)
    return cached[name]


def _ask_workers(cluster: Cluster) -> WorkerView:
    view = WorkerView(at=time.monotonic())
    if expected_workers(cluster) == 0:
        return view
    plain: list[str] = []
    by_host: dict[str, set[str]] = {}
    for host, body in discovery.request(cluster, SPECS_COMMAND).by_worker.items():
        tasks = body.get("tasks") if isinstance(body, dict) else None
        if not isinstance(tasks, dict):
            plain.append(host)  # a plain celery worker: "no such command"
            continue
        by_host[host] = set(tasks)
        for name, data in tasks.items():
            if name not in view.specs and isinstance(data, dict):
                with contextlib.suppress(ValidationError):  # another version: unknown
                    view.specs[name] = TaskSpec.model_validate(data)
    if plain:
        replies = discovery.request(cluster, "registered", destination=plain, alive=True)
        by_host |= {h: set(n) for h, n in discovery.registered_names(replies.by_worker).items()}
    for host, names in by_host.items():
        for name in names:
            view.hosts.setdefault(name, set()).add(host)
    view.answered = len(by_host)
    return view


def worker_view(cluster: Cluster, *, max_age_s: float = WORKER_SPECS_TTL_S) -> WorkerView:
    """Live workers' tasks and specs, asked at most every `max_age_s` seconds."""
    cached = cluster.worker_view
    if cached is not None and cached.fresh(max_age_s):
        return cached.value
    view = _ask_workers(cluster)
    cluster.worker_view = Stamped(view.at, view)
    return view


def resolve_spec(cluster: Cluster, name: str, view: WorkerView) -> tuple[TaskSpec | None, Source]:
    """The spec used for `name` (the app's first, then a celery-mcp worker's) and its source."""
    spec = app_spec(cluster, name)
    if spec is not None:
        return spec, "app"
    if name in view.specs:
        return view.specs[name], "worker"
    return None, "unknown"


def check_arguments(cluster: Cluster, name: str, args: Any, kwargs: Any) -> None:
    """Raise InvalidArgument when args/kwargs do not fit `name`'s known signature.

    Called by `sending.ensure_sendable` before anything is published. A task whose signature
    is unknown (only plain celery workers have it) is not checked.
    """
    spec = app_spec(cluster, name)
    if spec is None:
        view = worker_view(cluster)
        if name not in view.hosts:  # a worker that started since: ask again (once)
            view = worker_view(cluster, max_age_s=REFRESH_ON_MISS_S)
        spec = view.specs.get(name)
    if spec is not None:
        check_call(spec, list(args or []), dict(kwargs or {}))


# -- operations -------------------------------------------------------------------------------


def _matcher(pattern: str) -> str:
    return pattern if _GLOB_CHARS & set(pattern) else f"*{pattern}*"


def list_task_types(cluster: Cluster, request: ListTaskTypesInput) -> TaskTypeList:
    """A page of the task names the app and live workers know, with signatures."""
    view = worker_view(cluster)
    glob = _matcher(request.pattern)
    names = sorted(
        n for n in cluster.app_task_names() | set(view.hosts) if fnmatch.fnmatchcase(n, glob)
    )
    page = names[request.offset : request.offset + request.limit]
    items = []
    for name in page:
        spec, source = resolve_spec(cluster, name, view)
        items.append(
            TaskTypeSummary(
                name=name,
                signature=spec.signature if spec else None,
                summary=spec.summary if spec else "",
                source=source,
                worker_count=len(view.hosts.get(name, ())),
            )
        )
    end = request.offset + len(page)
    return TaskTypeList(
        tasks=items,
        total=len(names),
        next_offset=end if end < len(names) else None,
        workers_answered=view.answered,
    )


def routed_queue(cluster: Cluster, name: str) -> str | None:
    """The queue this process's app routes `name` to when no queue is given."""
    try:
        queue = cluster.app.amqp.router.route({}, name).get("queue")
    except Exception:  # a router that needs the task's arguments: Celery decides at send
        return None
    return str(getattr(queue, "name", queue)) if queue else None


def _note(cluster: Cluster, source: Source, spec: TaskSpec | None, workers: list[str]) -> str:
    if spec is None:
        return (
            "signature unknown: only plain celery workers have this task; run them with "
            "`celery-mcp worker` or import the app with --app to see and check its arguments"
        )
    if not workers:
        return "no live worker has this task registered; a sent task waits in its queue"
    if source == "worker" and spec.queue and spec.queue != routed_queue(cluster, spec.name):
        return (
            f"its workers route it to queue {spec.queue!r} but this server's app does not: "
            f"pass queue={spec.queue!r} to send_task"
        )
    return ""


def describe_task(cluster: Cluster, request: DescribeTaskInput) -> TaskDescription:
    """One task's spec (app first, then a celery-mcp worker's) and the workers that have it."""
    name = request.task_name
    view = worker_view(cluster)
    if name not in view.hosts and name not in cluster.app_task_names():
        view = worker_view(cluster, max_age_s=REFRESH_ON_MISS_S)
    spec, source = resolve_spec(cluster, name, view)
    workers = sorted(view.hosts.get(name, ()))
    if spec is None and not workers:
        raise unknown_task(cluster, name)
    data = spec.model_dump() if spec else {"name": name}
    note = _note(cluster, source, spec, workers) or None
    return TaskDescription(**data, source=source, workers=workers, note=note)
