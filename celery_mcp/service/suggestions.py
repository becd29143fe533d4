"""Names to complete arguments with (task names, queues, workers, schedule entries, task ids).

Answers come from a per-kind cache (`TTL_S`, `TTL_S_OF`), so a keystroke never waits on a
broadcast: a stale list is served while one background refresh runs; only the very first request
of a kind waits for its first read (bounded like every call). Sources, cheapest first:

- task_name: the imported app's tasks, and what live workers registered (their cached roll);
- queue: the default queue, the app's `task_queues`, and the queues of recent tasks (history);
- worker: hostnames that answered this process, and those the history has seen;
- schedule: entry names in the schedule store (one sorted-set read);
- task_id: the newest recorded task ids (history).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from celery_mcp.service.views import Kind

if TYPE_CHECKING:
    from celery_mcp.service.cluster import Cluster

log = logging.getLogger("celery_mcp.suggestions")

#: How long a kind's names are served before a background refresh; recent task ids change
#: with every send, and their read is one sorted-set range, so they are read again sooner.
TTL_S = 10.0
TTL_S_OF: dict[Kind, float] = {"task_id": 2.0}
#: Most values one completion returns (the protocol's cap).
MAX_VALUES = 100
#: Most names kept per kind (recent task ids, schedule entries).
KEEP = 1_000


def _safe(read: Callable[[], Iterable[str]]) -> set[str]:
    """`read()`'s names, or none when its store is not there (completion is best effort)."""
    return set(_safe_list(lambda: list(read())))


def _safe_list(read: Callable[[], list[str]]) -> list[str]:
    try:
        return [str(n) for n in read() if n]
    except Exception:
        log.debug("a completion source failed", exc_info=True)
        return []


def task_names(cluster: Cluster) -> list[str]:
    # Celery (0.3 s): the MCP server imports this module at start, before it loads Celery
    from celery_mcp.service.discovery import worker_task_names

    return sorted(_safe(cluster.app_task_names) | _safe(lambda: worker_task_names(cluster)))


def queue_names(cluster: Cluster) -> list[str]:
    conf = cluster.app.conf
    names = {str(conf.task_default_queue)}
    names |= _safe(lambda: [q.name for q in conf.task_queues or ()])
    names |= _safe(lambda: cluster.history.recent_queues(500))
    return sorted(names)


def worker_names(cluster: Cluster) -> list[str]:
    return sorted(set(cluster.workers_seen) | _safe(lambda: cluster.history.workers()))


def schedule_names(cluster: Cluster) -> list[str]:
    return sorted(_safe(lambda: cluster.schedules.names(KEEP)))


def recent_task_ids(cluster: Cluster) -> list[str]:
    return _safe_list(lambda: cluster.history.recent_ids(KEEP))


SOURCES: dict[Kind, Callable[[Cluster], list[str]]] = {
    "task_name": task_names,
    "queue": queue_names,
    "worker": worker_names,
    "schedule": schedule_names,
    "task_id": recent_task_ids,
}


def matching(names: list[str], typed: str, limit: int = MAX_VALUES) -> tuple[list[str], int]:
    """Names starting with `typed`, then names containing it (case-insensitive), up to
    `limit`; and how many matched in all."""
    low = typed.lower()
    first = [n for n in names if n.lower().startswith(low)]
    then = [n for n in names if low in n.lower() and not n.lower().startswith(low)]
    found = first + then
    return found[:limit], len(found)


class Suggestions:
    """The cached names of each kind, refreshed in the background when stale."""

    def __init__(self, get_cluster: Callable[[], Cluster], ttl_s: float = TTL_S) -> None:
        self._get_cluster = get_cluster
        self.ttl_s = ttl_s
        self._cache: dict[Kind, tuple[float, list[str]]] = {}  # kind -> (monotonic, names)
        self._refreshing: set[Kind] = set()
        self._lock = threading.Lock()

    def cached(self, kind: Kind) -> list[str] | None:
        """The names of `kind` now (None before the first read); starts a background refresh
        when they are older than the TTL."""
        entry = self._cache.get(kind)
        if entry is None:
            return None
        if time.monotonic() - entry[0] >= TTL_S_OF.get(kind, self.ttl_s):
            self._refresh_in_background(kind)
        return entry[1]

    def read(self, kind: Kind) -> list[str]:
        """Read `kind`'s names now (blocking) and cache them."""
        names = SOURCES[kind](self._get_cluster())
        self._cache[kind] = (time.monotonic(), names)
        return names

    def _refresh_in_background(self, kind: Kind) -> None:
        with self._lock:
            if kind in self._refreshing:
                return
            self._refreshing.add(kind)

        def refresh() -> None:
            try:
                self.read(kind)
            except Exception:
                log.debug("refreshing %s names failed", kind, exc_info=True)
            finally:
                with self._lock:
                    self._refreshing.discard(kind)

        threading.Thread(target=refresh, name=f"celery-mcp-names-{kind}", daemon=True).start()
