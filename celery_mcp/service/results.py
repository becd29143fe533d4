"""Reading task results from the result backend: task metas, one at a time or in batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery.backends.base import BaseKeyValueStoreBackend, DisabledBackend

from celery_mcp.errors import InvalidArgument, NoResultBackend, translate_errors
from celery_mcp.service import rpc_results
from celery_mcp.service.cluster import Cluster

MGET_BATCH = 1000
PENDING_META: dict[str, Any] = {"status": "PENDING", "result": None}


def has_result_backend(cluster: Cluster) -> bool:
    """False for an app that keeps no results (`DisabledBackend`: fire-and-forget apps)."""
    return not isinstance(cluster.app.backend, DisabledBackend)


def check_result_backend(cluster: Cluster) -> None:
    """Raise NoResultBackend when the app keeps no results."""
    if not has_result_backend(cluster):
        raise NoResultBackend(
            "this app has no result backend (result_backend is not set): its tasks' states and "
            "results are not kept anywhere, so they cannot be read",
            hint="set the app's result_backend (or CELERY_MCP_RESULT_BACKEND) to read results; "
            "sending works without one",
        )


def kv_backend(cluster: Cluster) -> BaseKeyValueStoreBackend:
    """The result backend when it is a key-value store (Redis/Valkey), else InvalidArgument."""
    backend = cluster.app.backend
    if not isinstance(backend, BaseKeyValueStoreBackend):
        raise InvalidArgument(
            f"this needs a key-value result backend (Redis/Valkey); this one is "
            f"{type(backend).__name__}",
            hint="set CELERY_MCP_RESULT_BACKEND to a redis:// URL",
        )
    return backend


def task_meta(cluster: Cluster, task_id: str) -> dict[str, Any]:
    """What the backend stores for `task_id` (status PENDING when it knows nothing); on rpc://
    what the reply consumer stored."""
    check_result_backend(cluster)
    if rpc_results.uses_rpc(cluster):
        rpc_results.drain(cluster)
        return rpc_results.read(cluster, task_id)
    with translate_errors("backend"):
        return dict(cluster.app.backend.get_task_meta(task_id))


def known_meta(cluster: Cluster, task_id: str) -> dict[str, Any]:
    """The backend's meta of `task_id`, or {} when it knows nothing of it (or keeps nothing)."""
    if not has_result_backend(cluster):
        return {}
    meta = task_meta(cluster, task_id)
    if meta.get("status", "PENDING") == "PENDING" and not meta.get("name"):
        return {}
    return meta


def read_metas(backend: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """id -> meta of the ids a key-value backend knows, in batched MGETs (exceptions decoded)."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), MGET_BATCH):
        batch = list(ids[start : start + MGET_BATCH])
        raws = backend.mget([backend.get_key_for_task(i) for i in batch])
        for task_id, raw in zip(batch, raws, strict=True):
            if raw:
                found[task_id] = dict(backend.decode_result(raw))
    return found


def known_metas(cluster: Cluster, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """id -> meta of the ids the backend knows (batched MGETs on key-value backends)."""
    backend = cluster.app.backend
    if rpc_results.uses_rpc(cluster):
        return rpc_results.read_many(cluster, ids)
    if not isinstance(backend, BaseKeyValueStoreBackend):
        return {i: m for i in ids if (m := known_meta(cluster, i))}
    with translate_errors("backend"):
        return read_metas(backend, ids)


def metas(cluster: Cluster, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Metas of `ids` in order; an id the backend does not know reads as PENDING."""
    found = known_metas(cluster, ids)
    return [found.get(i, PENDING_META) for i in ids]
