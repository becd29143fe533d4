"""The Redis result backend of client processes (MCP server, CLI, facade): no subscribe on send.

Celery's Redis backend subscribes to a task's result channel as the task is sent
(`on_task_call`), once the sending thread's result consumer has started, so that a later
`get()` hears the result. A client that sends many tasks and waits on few pays a SUBSCRIBE on
every send after its first `get_result`, then receives every result it subscribed to, and with
a frozen broker the subscribe is one more socket timeout inside `send_task` (3 s instead of 2).
`get_result` subscribes when it waits (`AsyncResult.get` subscribes, then reads the state, so a
result stored in between is not missed), so the early subscribe buys these processes nothing.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend

#: Backend aliases a client app resolves to this class (see `app.make_app`).
ALIASES = {
    "redis": "celery_mcp.client_backend:ClientRedisBackend",
    "rediss": "celery_mcp.client_backend:ClientRedisBackend",
}


class ClientRedisBackend(RedisBackend):  # type: ignore[misc]
    """RedisBackend that does not subscribe to a task's result when the task is sent."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Nothing: get_result subscribes when it waits."""
