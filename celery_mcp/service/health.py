"""Health: broker, result backend, workers, beat and schedule store, each bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from celery_mcp.config import redact_url
from celery_mcp.errors import CeleryMcpError, translate_errors
from celery_mcp.models.health import ComponentHealth, HealthInput, HealthResult
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import broadcast_inspect
from celery_mcp.service.registry import operation

#: Extra checks other toolsets add (beat, schedule store): name -> check.
EXTRA_CHECKS: dict[str, Callable[[Cluster], ComponentHealth]] = {}


def _timed(check: Callable[[], str]) -> ComponentHealth:
    start = time.perf_counter()
    try:
        detail = check()
    except CeleryMcpError as exc:
        return ComponentHealth(ok=False, detail=str(exc))
    return ComponentHealth(
        ok=True, latency_ms=round((time.perf_counter() - start) * 1e3, 2), detail=detail
    )


def check_broker(cluster: Cluster) -> ComponentHealth:
    """Connect to the broker (PING on Redis/Valkey) within the broker timeout."""

    def check() -> str:
        with translate_errors("broker"):
            if cluster.broker_is_redis:
                cluster.broker_redis.ping()
                return "PING answered"
            with cluster.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=cluster.settings.broker_timeout_s)
            return "connected"

    return _timed(check)


def check_backend(cluster: Cluster) -> ComponentHealth:
    """Reach the result backend (PING on Redis/Valkey) within the broker timeout."""

    def check() -> str:
        backend = cluster.app.backend
        with translate_errors("backend"):
            client = getattr(backend, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()
                return "PING answered"
            backend.get_task_meta("celery-mcp-health-probe")
            return "read a probe key"

    return _timed(check)


def check_workers(cluster: Cluster) -> tuple[ComponentHealth, list[str]]:
    """Ping live workers, returning once every expected worker answered."""
    names: list[str] = []

    def check() -> str:
        names.extend(sorted(broadcast_inspect(cluster, "ping")))
        if not names:
            raise CeleryMcpError(
                "no worker answered ping",
                hint="start one with `celery-mcp worker` (or your own celery worker)",
            )
        return f"{len(names)} worker(s) answered ping"

    return _timed(check), names


@operation("health", read_only=True)
def health(cluster: Cluster, request: HealthInput) -> HealthResult:
    """Check broker, backend, workers, beat and schedule store (bounded). Call first when something
    fails."""
    # The checks are independent and each is bounded: run at once, they take the longest
    # one's time, not the sum (a frozen broker: 1 s instead of 4 s).
    with ThreadPoolExecutor(1 + len(EXTRA_CHECKS)) as pool:
        backend_f = pool.submit(check_backend, cluster)
        extra_f = {name: pool.submit(check, cluster) for name, check in EXTRA_CHECKS.items()}
        broker = check_broker(cluster)
        if request.include_workers and broker.ok:
            workers, names = check_workers(cluster)
        else:
            workers, names = ComponentHealth(ok=None, detail="not checked"), []
        backend = backend_f.result()
        extra = {name: future.result() for name, future in extra_f.items()}
    unknown = ComponentHealth(ok=None, detail="not checked")
    return HealthResult(
        ok=bool(broker.ok and backend.ok and workers.ok is not False),
        broker_url=redact_url(cluster.broker_url),
        backend_url=redact_url(cluster.backend_url),
        embedded=cluster.settings.embedded,
        broker=broker,
        backend=backend,
        workers=workers,
        worker_names=names,
        beat=extra.get("beat", unknown),
        schedule_store=extra.get("schedule_store", unknown),
    )
