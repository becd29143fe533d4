"""Watch tasks for state changes: one listener on the result backend's pub/sub for all of them.

The Redis/Valkey result backend PUBLISHes every stored state (STARTED when tracked, RETRY,
custom states, SUCCESS, FAILURE, REVOKED) on the channel named like the task's key, so one
pub/sub connection subscribed to the watched tasks' channels hears every change as it is
stored, with no polling per task. `TaskWatch.watch(task_id)` counts watchers per task; the
channel is subscribed while the count is above zero. Right after subscribing, the stored
state is read once: a task that finished before the watch began is reported at once.

Only the listener thread touches the pub/sub connection: `watch` and `unwatch` queue a change
and wake it with a PUBLISH on its private control channel. Its blocking read is bounded
(`READ_S`) so it sees `close`; a lost connection is reopened (after `RETRY_S`), every channel
subscribed again and every watched task's state read again, so no change is missed silently.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery.backends.redis import RedisBackend

from celery_mcp.errors import Unavailable

if TYPE_CHECKING:  # types only: the cluster module imports Celery
    from celery_mcp.service.cluster import Cluster

log = logging.getLogger("celery_mcp.watch")

#: Longest the listener blocks on one read before it looks at `close`.
READ_S = 1.0
#: Wait before reopening a lost pub/sub connection, doubling while it stays lost.
RETRY_S = 0.5
RETRY_MAX_S = 5.0

#: Called in the listener thread with (task id, stored state); must not block for long.
OnChange = Callable[[str, str], None]


def _state(raw: Any) -> str:
    """The `status` of a stored or published task meta ('' when unreadable)."""
    try:
        return str(json.loads(raw).get("status") or "")
    except (TypeError, ValueError, AttributeError):
        return ""


class TaskWatch:
    """Task ids being watched, and the one thread that listens for their changes."""

    def __init__(self, cluster: Cluster, on_change: OnChange) -> None:
        backend = cluster.app.backend
        if not isinstance(backend, RedisBackend):
            raise Unavailable(
                f"watching tasks needs a Redis/Valkey result backend; this one is "
                f"{type(backend).__name__}",
                hint="read celery://tasks/{id} again (or call get_result) to follow the task",
            )
        self._backend = backend
        self._client: Any = backend.client
        self._on_change = on_change
        self._control = f"celery_mcp:watch:{uuid.uuid4().hex}"
        self._counts: dict[str, int] = {}
        self._channels: dict[str, str] = {}  # channel -> task id
        self._lock = threading.Lock()
        self._changes: queue.SimpleQueue[tuple[bool, str]] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._pubsub: Any = None
        self._open()  # the first connection fails here, in the caller, with a clear error
        self._thread = threading.Thread(target=self._listen, name="celery-mcp-watch", daemon=True)
        self._thread.start()

    def channel(self, task_id: str) -> str:
        key = self._backend.get_key_for_task(task_id)
        return key.decode() if isinstance(key, bytes) else str(key)

    @property
    def watched(self) -> dict[str, int]:
        """Watchers per task id (a copy)."""
        with self._lock:
            return dict(self._counts)

    def watch(self, task_id: str) -> None:
        """Report `task_id`'s changes until as many `unwatch` calls (blocking: a PUBLISH)."""
        with self._lock:
            self._counts[task_id] = self._counts.get(task_id, 0) + 1
            first = self._counts[task_id] == 1
        if first:
            self._changes.put((True, task_id))
            self._wake()

    def unwatch(self, task_id: str) -> None:
        """Drop one watcher of `task_id`; the last one unsubscribes its channel."""
        with self._lock:
            left = self._counts.get(task_id, 0) - 1
            if left > 0:
                self._counts[task_id] = left
                return
            if self._counts.pop(task_id, None) is None:
                return
        self._changes.put((False, task_id))
        self._wake()

    def close(self) -> None:
        """Stop listening (within READ_S) and close the connection."""
        self._closed.set()
        self._wake()
        self._thread.join(READ_S + 1.0)

    def _wake(self) -> None:
        try:
            self._client.publish(self._control, b"")
        except Exception:  # the listener picks the change up on its next read anyway
            log.debug("watch wake-up failed", exc_info=True)

    def _open(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._control)
        self._pubsub = pubsub

    def _reopen(self) -> None:
        """A fresh connection with every watched channel, then every watched state read."""
        try:
            self._pubsub.close()
        except Exception:
            log.debug("closing the old pub/sub failed", exc_info=True)
        self._open()
        with self._lock:
            ids = list(self._counts)
        self._channels = {}
        self._subscribe(ids)

    def _subscribe(self, ids: list[str]) -> None:
        if not ids:
            return
        channels = {self.channel(i): i for i in ids}
        self._pubsub.subscribe(*channels)
        self._channels.update(channels)
        stored = self._client.mget(list(channels))
        for task_id, raw in zip(channels.values(), stored, strict=True):
            state = _state(raw) if raw is not None else ""
            if state:  # already stored: report it (it may have finished before the watch)
                self._report(task_id, state)

    def _apply_changes(self) -> None:
        added: list[str] = []
        removed: list[str] = []
        while True:
            try:
                add, task_id = self._changes.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                wanted = task_id in self._counts
            if add and wanted and self.channel(task_id) not in self._channels:
                added.append(task_id)
            elif not add and not wanted and self.channel(task_id) in self._channels:
                removed.append(task_id)
        if removed:
            channels = [self.channel(i) for i in removed]
            self._pubsub.unsubscribe(*channels)
            for channel in channels:
                self._channels.pop(channel, None)
        self._subscribe(added)

    def _report(self, task_id: str, state: str) -> None:
        try:
            self._on_change(task_id, state)
        except Exception:  # one bad callback must not stop the listener
            log.exception("watch callback failed for %s", task_id)

    def _listen(self) -> None:
        retry_s = RETRY_S
        while not self._closed.is_set():
            try:
                self._apply_changes()
                message = self._pubsub.get_message(timeout=READ_S)
                retry_s = RETRY_S
                if message is None or message.get("type") != "message":
                    continue
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                task_id = self._channels.get(channel)
                if task_id is not None:
                    self._report(task_id, _state(message.get("data")))
            except Exception:
                if self._closed.is_set():
                    break
                log.warning("task watch lost its connection; reopening in %.1fs", retry_s)
                self._closed.wait(retry_s)
                retry_s = min(RETRY_MAX_S, retry_s * 2)
                try:
                    self._reopen()
                except Exception:
                    log.debug("reopening the task watch failed; retrying", exc_info=True)
        try:
            self._pubsub.close()
        except Exception:
            log.debug("closing the task watch failed", exc_info=True)
