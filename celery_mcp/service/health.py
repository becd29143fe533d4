"""Health: broker, result backend, workers, beat and schedule store, each bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from celery.backends.base import BaseKeyValueStoreBackend

from celery_mcp.config import redact_url
from celery_mcp.errors import CeleryMcpError, InvalidArgument, NoWorkers, translate_errors
from celery_mcp.models.health import ComponentHealth, HealthInput, HealthResult
from celery_mcp.service import cancel
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import request
from celery_mcp.service.results import has_result_backend
from celery_mcp.service.rpc_results import drain, uses_rpc
from celery_mcp.service.schedule_rules import tz_name
from celery_mcp.stores.keys import HEALTH_PROBE_ID, RPC_REPLY_QUEUE

#: A heartbeat older than this (plus 3 of its loop intervals) is a dead beat.
HEARTBEAT_STALE_S = 5.0
#: `serve --with-worker`'s worker: health waits for it until it is this old (it answers about
#: 5 s after its spawn on a 2-core machine) ...
OWN_WORKER_WAIT_S = 8.0
#: ... and reports it as starting, not missing, until this old.
OWN_WORKER_STARTING_S = 60.0
OWN_WORKER_POLL_S = 0.25


class Verdict(Exception):
    """Raised by a check to report a state other than healthy: ok False, or None (n/a)."""

    def __init__(self, detail: str, ok: bool | None = False) -> None:
        super().__init__(detail)
        self.detail, self.ok = detail, ok


def _timed(check: Callable[[], str]) -> ComponentHealth:
    """Run one check: healthy with its detail, or the Verdict / typed error it raised.

    A store this deployment has not got (InvalidArgument from the cluster) is not applicable.
    """
    start = time.perf_counter()
    try:
        detail = check()
    except Verdict as verdict:
        return ComponentHealth(ok=verdict.ok, latency_ms=_ms(start), detail=verdict.detail)
    except InvalidArgument as exc:
        return ComponentHealth(ok=None, detail=exc.message)
    except CeleryMcpError as exc:
        return ComponentHealth(ok=False, detail=str(exc))
    return ComponentHealth(ok=True, latency_ms=_ms(start), detail=detail)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1e3, 2)


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
        if not has_result_backend(cluster):
            raise Verdict(
                "no result backend configured: tasks can be sent, their results cannot be "
                "read (set the app's result_backend or CELERY_MCP_RESULT_BACKEND)",
                ok=None,
            )
        with translate_errors("backend"):
            client = getattr(backend, "client", None)
            if client is not None and hasattr(client, "ping"):
                client.ping()
                return "PING answered"
            if uses_rpc(cluster):
                return (
                    f"rpc://: results come to the reply queue {RPC_REPLY_QUEUE!r} and are kept in "
                    "the state store; results of tasks other clients sent are not visible"
                )
            backend.get_task_meta(HEALTH_PROBE_ID)
            return "read a probe key"

    return _timed(check)


def check_state_store(cluster: Cluster) -> ComponentHealth:
    """PING the store of this project's own state, and say what it holds."""

    def check() -> str:
        url = cluster.state_url
        if url is None:
            raise Verdict("no Redis/Valkey for this project's state", ok=None)
        held = ["task history"]
        if cluster.schedules.url == url:
            held.append("periodic tasks")
        if has_result_backend(cluster) and not isinstance(
            cluster.app.backend, BaseKeyValueStoreBackend
        ):
            held.append("workflow records")
        if uses_rpc(cluster):
            drain(cluster)  # results are kept from now on, whoever reads them
            held.append("rpc:// results (of tasks sent through celery-mcp)")
        with translate_errors("backend"):
            cluster.state.ping()
        return f"{', '.join(held)} in {redact_url(url)}"

    return _timed(check)


def check_workers(cluster: Cluster) -> tuple[ComponentHealth, list[str]]:
    """Ping live workers, returning once every expected worker answered.

    The worker `serve --with-worker` started answers a few seconds after its spawn: while it
    is that young, the check waits for it (within OWN_WORKER_WAIT_S) rather than report that
    no worker runs, and says it is starting if it still has not answered.
    """
    names: list[str] = []

    def check() -> str:
        replies = request(cluster, "ping")
        while _own_worker_pending(cluster, replies.by_worker, OWN_WORKER_WAIT_S):
            cancel.sleep(OWN_WORKER_POLL_S)
            replies = request(cluster, "ping")
        names.extend(replies.by_worker)
        starting = _own_worker_pending(cluster, replies.by_worker, OWN_WORKER_STARTING_S)
        if not names and starting:
            raise Verdict(
                f"the worker this server started ({cluster.settings.own_worker}) is still "
                "starting; call health again in a few seconds",
                ok=None,
            )
        if not names:
            raise NoWorkers(
                "no worker answered ping",
                hint="start one with `celery-mcp worker` (or your own celery worker)",
            )
        found = f"{len(names)} worker(s) answered ping"
        if replies.duplicates:
            raise Verdict(
                f"{found}, but several workers answer as {', '.join(replies.duplicates)}: "
                "commands and the history cannot tell them apart; give each a unique "
                "--hostname (e.g. name@%h with a distinct name)"
            )
        return found

    return _timed(check), names


def _own_worker_pending(cluster: Cluster, answered: dict[str, object], within_s: float) -> bool:
    """True when the worker `serve --with-worker` started is younger than `within_s` and has
    not answered yet."""
    settings = cluster.settings
    if settings.own_worker is None or settings.own_worker_since is None:
        return False
    if settings.own_worker in answered:
        return False
    return time.time() - settings.own_worker_since < within_s


def check_schedule_store(cluster: Cluster) -> ComponentHealth:
    """Reach the schedule store and count its entries (bounded by the broker timeout)."""

    def check() -> str:
        with translate_errors("broker"):
            store = cluster.schedules
            total, scheduled = store.counts()
        return (
            f"{total} periodic task(s), {scheduled} with a next run; "
            f"RedBeat store {redact_url(store.url)} prefix {store.prefix!r}"
        )

    return _timed(check)


def check_beat(cluster: Cluster) -> ComponentHealth:
    """Is a beat alive (fresh heartbeat or held lock) and when did it last tick."""

    def check() -> str:
        with translate_errors("broker"):
            store = cluster.schedules
            beats = list(store.heartbeats().values())
            lock_ttl_ms = store.lock_ttl_ms()
            _, scheduled = store.counts()
        now = time.time()
        fresh = [
            b
            for b in beats
            if now - float(b.get("last_tick_at", 0))
            <= HEARTBEAT_STALE_S + 3 * float(b.get("max_interval_s", 1))
        ]
        active = [b for b in fresh if b.get("role") == "active"]
        if active:
            return _active_beat(cluster, active[0], len(fresh) - len(active), now)
        if lock_ttl_ms > 0:
            return (
                f"beat lock held (expires in {lock_ttl_ms / 1000:.1f}s) by a beat without "
                "heartbeat (e.g. a stock celery beat with RedBeat)"
            )
        if not scheduled:
            raise Verdict("no beat running (no periodic task to run)", ok=None)
        raise Verdict(
            f"{scheduled} periodic task(s) scheduled but no beat is running; "
            "start one with `celery-mcp beat`"
        )

    return _timed(check)


def _active_beat(cluster: Cluster, beat: dict[str, object], standby: int, now: float) -> str:
    ticked = float(str(beat["last_tick_at"]))
    zone, mine = str(beat.get("timezone", tz_name(cluster.app))), tz_name(cluster.app)
    if zone != mine:
        raise Verdict(
            f"beat {beat.get('node')} reads crontabs in {zone}, this server in {mine}: "
            "set CELERY_MCP_TIMEZONE the same for both"
        )
    return (
        f"beat {beat.get('node')} active, last tick {now - ticked:.1f}s ago "
        f"(at {datetime.fromtimestamp(ticked, UTC).isoformat()}); {standby} standby"
    )


def health(cluster: Cluster, request: HealthInput) -> HealthResult:
    """Every component's state, each check bounded, failures as data."""
    # The checks are independent and each is bounded: run at once, they take the longest
    # one's time, not the sum (a frozen broker: 1 s instead of 4 s).
    with ThreadPoolExecutor(4) as pool:
        backend_f = pool.submit(check_backend, cluster)
        beat_f = pool.submit(check_beat, cluster)
        store_f = pool.submit(check_schedule_store, cluster)
        state_f = pool.submit(check_state_store, cluster)
        broker = check_broker(cluster)
        if request.include_workers and broker.ok:
            workers, names = check_workers(cluster)
        else:
            workers, names = ComponentHealth(ok=None, detail="not checked"), []
        backend = backend_f.result()
        beat, store, state = beat_f.result(), store_f.result(), state_f.result()
    up = broker.ok and backend.ok is not False and workers.ok is not False
    return HealthResult(
        ok=bool(up and state.ok is not False),
        broker_url=redact_url(cluster.broker_url),
        backend_url=redact_url(cluster.backend_url),
        embedded=cluster.settings.embedded,
        broker=broker,
        backend=backend,
        workers=workers,
        worker_names=names,
        beat=beat,
        schedule_store=store,
        state_store=state,
    )
