"""Workflow records: the tree behind one workflow id, kept in the result backend.

Every workflow tool assigns all task ids before publishing and stores a record of the tree
under `keys.WORKFLOW_RECORD_PREFIX + <workflow id>` in the result backend, with its own expiry
(`result_expires`), or in the state store when the backend keeps no keys (rpc://);
get_workflow reads it back. On the wire a node is a compact list
`[task_id, task_name, items]` (10,000 nodes stay small); in code it is a `NodeRecord`.

Groups (group_tasks, map_task without callback) are also saved with Celery's own
`GroupResult.save()`, so any Celery client can restore them by id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from celery import Celery
from celery.backends.base import BaseKeyValueStoreBackend
from celery.result import AsyncResult, GroupResult
from pydantic import BaseModel, ConfigDict, model_validator

from celery_mcp.models.workflows import WorkflowKind
from celery_mcp.stores.keys import WORKFLOW_RECORD_PREFIX


class NodeRecord(BaseModel):
    """One task of a workflow: its id, its task name, and its item count (chunked map)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    task_name: str = ""  # "" when unknown (a group saved by someone else)
    items: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return dict(zip(("task_id", "task_name", "items"), value, strict=False))
        return value

    def wire(self) -> list[Any]:
        return [self.task_id, self.task_name, self.items]


class WorkflowRecord(BaseModel):
    """The tree of one workflow: its kind, its nodes in order, its group and callback."""

    kind: WorkflowKind
    nodes: list[NodeRecord]
    group_id: str | None = None
    callback: NodeRecord | None = None
    #: ids whose publish failed (a publish that stopped part-way); empty: all were sent
    not_sent: list[str] = []

    def task_ids(self) -> list[str]:
        """Every node's id, the callback's last."""
        return [n.task_id for n in self.nodes] + ([self.callback.task_id] if self.callback else [])

    def to_wire(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "group_id": self.group_id,
                "nodes": [n.wire() for n in self.nodes],
                "callback": self.callback.wire() if self.callback else None,
                **({"not_sent": self.not_sent} if self.not_sent else {}),
            },
            separators=(",", ":"),
        )


class KeyValue(Protocol):
    """Where records are kept: a key-value result backend, or the state store (`StateKV`)."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: str) -> Any: ...


@dataclass(frozen=True)
class StateKV:
    """The state store as a record keeper (when the result backend is no key-value store,
    e.g. rpc://): records expire as results would."""

    client: Any
    ttl_s: int

    def get(self, key: str) -> Any:
        return self.client.get(key)

    def set(self, key: str, value: str) -> Any:
        return self.client.set(key, value, ex=self.ttl_s)


def backend_prefix(backend: BaseKeyValueStoreBackend) -> str:
    """The backend's `global_keyprefix`, spelled as Celery spells its own keys with it."""
    celery_prefix = backend.task_keyprefix  # "<global prefix>celery-task-meta-"
    if isinstance(celery_prefix, bytes):
        celery_prefix = celery_prefix.decode()
    return str(celery_prefix).removesuffix("celery-task-meta-")


def save(kv: KeyValue, prefix: str, workflow_id: str, record: WorkflowRecord) -> None:
    """Store the record under `prefix` (a backend applies its `result_expires`)."""
    kv.set(prefix + WORKFLOW_RECORD_PREFIX + workflow_id, record.to_wire())


def load(kv: KeyValue, prefix: str, workflow_id: str) -> WorkflowRecord | None:
    """The record of `workflow_id`, or None when there is none (not ours, or expired)."""
    raw = kv.get(prefix + WORKFLOW_RECORD_PREFIX + workflow_id)
    return WorkflowRecord.model_validate_json(raw) if raw else None


def save_group(app: Celery, group_id: str, member_ids: list[str]) -> None:
    """Save a group the Celery way (`GroupResult.save`), restorable by any Celery client."""
    GroupResult(group_id, [AsyncResult(i, app=app) for i in member_ids], app=app).save()


def saved_group_ids(app: Celery, group_id: str) -> list[str] | None:
    """Member ids of a group saved with `GroupResult.save()`, or None when it is not one (or
    the backend saves no groups, as rpc://)."""
    if not isinstance(app.backend, BaseKeyValueStoreBackend):
        return None
    saved = app.backend.restore_group(group_id)
    return None if saved is None else [r.id for r in saved.results]
