"""Where kombu keeps a Redis broker's data, for the reads kombu has no call for.

kombu's own calls (LLEN, SMEMBERS, PUBLISH, ...) add the app's `global_keyprefix`; the reads
this project makes beside them (TYPE before a purge, LINDEX/LRANGE of a queue's oldest
messages, HSCAN of the unacked hash, SCAN of the bindings) go through a plain client, so every
key is spelled here: the prefix, the priority sub-queues (`sep`, `priority_steps`), the
unacked hash, the binding sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery_mcp.errors import translate_errors
from celery_mcp.service.cluster import Cluster

BINDING_PREFIX = "_kombu.binding."


@dataclass(frozen=True)
class RedisLayout:
    """The broker's key names (each with the global prefix) and its priority steps."""

    prefix: str
    sep: str
    priority_steps: tuple[int, ...]
    unacked: str  # the hash of delivered, unacknowledged messages

    def queue_keys(self, queue: str) -> dict[int, str]:
        """Broker priority step -> the list key holding it (step 0: the queue itself)."""
        return {
            step: self.prefix + (f"{queue}{self.sep}{step}" if step else queue)
            for step in self.priority_steps
        }

    def binding_pattern(self) -> str:
        return f"{self.prefix}{BINDING_PREFIX}*"

    def exchange_of(self, binding_key: str) -> str:
        """The exchange name of a binding set key."""
        return binding_key.removeprefix(self.prefix).removeprefix(BINDING_PREFIX)


def layout(cluster: Cluster) -> RedisLayout:
    """The layout kombu's channel uses for this app (Redis/Valkey brokers only)."""
    with translate_errors("broker"), cluster.app.connection_or_acquire() as conn:
        channel: Any = conn.default_channel
        return RedisLayout(
            prefix=str(channel.global_keyprefix or ""),
            sep=str(channel.sep),
            priority_steps=tuple(int(s) for s in channel.priority_steps),
            unacked=str(channel.global_keyprefix or "") + str(channel.unacked_key),
        )
