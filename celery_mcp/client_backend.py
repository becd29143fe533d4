"""The result backends of this project's processes (server, CLI, facade, monitor, beat, worker).

Redis: no subscribe on send.

Celery's Redis backend subscribes to a task's result channel as the task is sent
(`on_task_call`), once the sending thread's result consumer has started, so that a later
`get()` hears the result. A client that sends many tasks and waits on few pays a SUBSCRIBE on
every send after its first `get_result`, then receives every result it subscribed to, and with
a frozen broker the subscribe is one more socket timeout inside `send_task` (3 s instead of 2).
`get_result` subscribes when it waits (`AsyncResult.get` subscribes, then reads the state, so a
result stored in between is not missed), so the early subscribe buys these processes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from celery.backends.rpc import RPCBackend
from kombu.entity import Queue

from celery_mcp.stores.keys import RPC_REPLY_QUEUE

#: Backend aliases a client app resolves to these classes (see `app.make_app`).
ALIASES = {
    "redis": "celery_mcp.client_backend:ClientRedisBackend",
    "rediss": "celery_mcp.client_backend:ClientRedisBackend",
    "rpc": "celery_mcp.client_backend:ClientRPCBackend",
}


class ClientRedisBackend(RedisBackend):  # type: ignore[misc]
    """RedisBackend that does not subscribe to a task's result when the task is sent."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Nothing: get_result subscribes when it waits."""


class ClientRPCBackend(RPCBackend):  # type: ignore[misc]
    """rpc:// with one durable reply queue for every process of this project.

    Celery's rpc:// sends a task's result to a queue of the sending thread (`app.thread_oid`,
    auto-deleted with its consumer): another thread of the server, or the CLI process that reads
    a result after the one that sent it exited, never sees it. Here every task these processes
    send names the shared queue `keys.RPC_REPLY_QUEUE` in `reply_to` (see
    `sending.publish_options`); it survives the processes (it expires after `result_expires`
    unused), and `service.rpc_results` drains it into the state store, where any thread or
    process reads results again.
    """

    #: Reads a result the reply drain kept (set by `service.rpc_results.drain`).
    read_kept: Callable[[str], dict[str, Any]] | None = None

    @property
    def oid(self) -> str:
        return RPC_REPLY_QUEUE

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        """Nothing: the reply drain, not this backend, consumes the shared queue (a consumer
        here, as Celery starts for each group member, would take results the drain never
        sees: rpc:// consumers do not acknowledge)."""
        return result

    def get_task_meta(self, task_id: str, backlog_limit: int = 1000) -> dict[str, Any]:
        """What the reply drain kept (rpc://'s own read would take others' results off the
        shared queue)."""
        meta = self.read_kept(task_id) if self.read_kept else {"status": "PENDING", "result": None}
        return {**meta, "task_id": task_id}

    def wait_for_pending(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "AsyncResult.get() on celery-mcp's rpc:// backend: read results with get_result"
        )

    @property
    def binding(self) -> Queue:
        return reply_queue(self)


def reply_queue(backend: RPCBackend) -> Queue:
    """The shared reply queue, declared as every process of this project declares it."""
    return Queue(  # type: ignore[no-untyped-call]
        RPC_REPLY_QUEUE,
        backend.exchange,
        RPC_REPLY_QUEUE,
        durable=True,
        auto_delete=False,
        expires=backend.expires,
    )


def reply_options(app: Celery) -> dict[str, Any]:
    """Publish options of every task this project sends: on rpc://, results go to the shared
    reply queue (any rpc:// backend of the app: a user's own RPCBackend subclass too)."""
    return {"reply_to": RPC_REPLY_QUEUE} if isinstance(app.backend, RPCBackend) else {}
