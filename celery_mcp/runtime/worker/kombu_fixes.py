"""Work-around for a kombu bug that made a worker exit when the Redis broker restarted.

With `task_acks_late` a worker holds unacknowledged messages. When the broker connection
drops, Celery closes the connection and reconnects; kombu sets the old transport's `client`
to None. Anything later done on the old channel - putting its unacked messages back while
closing it, or acknowledging a task that finishes after the reconnect - builds a connection
pool from `transport.client` and fails with AttributeError ("'NoneType' object has no attribute
'hostname'" or "... 'client'"). That is not a connection error, so kombu's and Celery's
"ignore connection errors" handlers let it through and Celery stops the worker
("Unrecoverable error"; kombu 5.7, the same family as kombu #582 and #970).

The fix raises redis' ConnectionError instead, which every one of those handlers expects: the
ack or restore is logged and skipped, the worker keeps running, and the messages stay in the
broker's unacked set until the visibility timeout delivers them again (at least once).
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from kombu.transport import redis as kombu_redis

_MARK = "_celery_mcp_closed_channel_check"


def install() -> None:
    """Patch kombu's Redis channel once (idempotent)."""
    original: Any = kombu_redis.Channel._connparams
    if getattr(original, _MARK, False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = getattr(self, "connection", None)
        if transport is None or transport.client is None:
            raise redis.exceptions.ConnectionError("channel closed after a lost connection")
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _MARK, True)
    setattr(kombu_redis.Channel, "_connparams", _connparams)  # noqa: B010
