"""The tools each toolset exposes: the contract the toolset tests check."""

from __future__ import annotations

TOOLSET_TOOLS: dict[str, set[str]] = {
    "health": {"health", "diagnose"},
    "tasks": {"send_task", "get_status", "get_result", "revoke"},
    "workers": {
        "inspect_workers",
        "ping_workers",
        "get_active_tasks",
        "get_registered_tasks",
        "queue_lengths",
        "purge_queue",
        "control_workers",
        "shutdown_workers",
    },
    "workflows": {"chain_tasks", "group_tasks", "chord_workflow", "map_task", "get_workflow"},
    "schedules": {
        "add_periodic_task",
        "list_periodic_tasks",
        "get_periodic_task",
        "update_periodic_task",
        "enable_periodic_task",
        "disable_periodic_task",
        "remove_periodic_task",
        "run_periodic_task_now",
    },
    "catalog": {"list_task_types", "describe_task"},
    "history": {"list_tasks", "get_task", "retry_task", "retry_failed"},
}
DEFAULT_MAX_TOOLS = 25
#: 22.1 KB since every schema keeps its type (nullable outputs as anyOf [null, X], any-JSON
#: values as typed anyOf branches: the Inspector's portability check), from 18.6 KB before.
DEFAULT_MAX_LIST_BYTES = 23_000
