"""`celery-mcp monitor`: records Celery events into the task history (stores.history).

Why a monitor process. Celery events are Redis PUBLISHes that nobody stores, so something must
listen while tasks run. The MCP server is the wrong listener: a stdio server lives only as long
as one client session. Worker signals would cover only `celery-mcp worker` processes and add a
write to every task. A small monitor sees every worker that emits events (it broadcasts
`enable_events` every minute for workers started without -E), runs while no MCP server does,
and holds a Redis lock, so any number can be started (`serve --with-worker`,
`worker --monitor`, a service unit): one records, the others stand by and take over within
LOCK_TTL_S of its death. On start it backfills, from the result backend, the tasks that
finished while none recorded.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery.backends.base import BaseKeyValueStoreBackend
from redis.exceptions import LockNotOwnedError

from celery_mcp.app import json_only
from celery_mcp.config import Settings
from celery_mcp.runtime.connect import open_cluster
from celery_mcp.service.results import read_metas
from celery_mcp.service.rpc_results import app_uses_rpc, drain

log = logging.getLogger("celery_mcp.monitor")

LOCK_TTL_S = 10.0
BACKFILL_BUDGET_S = 60.0


def _iso_ts(text: str) -> float:
    """Unix time of an ISO 8601 string (UTC when it has no offset); -inf when unreadable."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return -math.inf
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def backend_lookup(app: Any) -> Callable[[list[str]], dict[str, dict[str, Any]]] | None:
    """Batch reader of result-backend metas (key-value backends), or None."""
    backend = app.backend
    if not isinstance(backend, BaseKeyValueStoreBackend):
        return None
    return lambda ids: read_metas(backend, ids)


class Monitor:
    """The recorder process: capture events, write them in batches, keep the lock, trim."""

    FLUSH_S = 0.25
    MAX_PENDING = 200_000
    ENABLE_EVENTS_EVERY_S = 60.0

    def __init__(self, settings: Settings, *, parent_pid: int | None = None) -> None:
        self.settings = settings
        cluster = open_cluster(settings, worker=True)  # reconnect forever, like a worker
        self.app = cluster.app
        json_only(self.app)  # events from a user's pickle-configured app are never unpickled
        self.store = cluster.history
        self.lookup = backend_lookup(self.app)
        self.parent_pid = parent_pid
        self.lock = self.store.recorder_lock(LOCK_TTL_S)
        self.pending: deque[dict[str, Any]] = deque()
        self.stopping = threading.Event()
        self.lost = threading.Event()
        self.receiver: Any = None
        self.dropped = 0
        self.cluster = cluster

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        if self.receiver is not None:
            self.receiver.should_stop = True

    def run(self) -> None:
        """Record until stopped (SIGTERM/SIGINT, or the parent process exits)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        if app_uses_rpc(self.app):  # keep rpc:// results and fire chords while no server runs
            drain(self.cluster)
        standing_by = False
        while not self.stopping.is_set():
            try:
                acquired = self.lock.acquire()
                if not acquired and not standing_by:
                    log.info("standing by: another monitor records the task history")
                standing_by = not acquired
            except Exception as exc:
                log.warning("history store unreachable: %s", exc)
                acquired = False
            if acquired:
                log.info("recording task history")
                try:
                    self._record()
                except Exception:  # never die on a broker hiccup: stand by and try again
                    log.warning("recording stopped; retrying", exc_info=True)
                    self.stopping.wait(1.0)
            else:
                self._check_parent()
                self.stopping.wait(1.0)

    def _check_parent(self) -> None:
        if self.parent_pid and os.getppid() != self.parent_pid:
            log.info("parent %s exited; stopping", self.parent_pid)
            self.stop()

    def _on_event(self, event: dict[str, Any]) -> None:
        if len(self.pending) >= self.MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append(event)

    def _record(self) -> None:
        self.lost.clear()
        flusher = threading.Thread(target=self._flush_loop, name="history-flush", daemon=True)
        flusher.start()
        threading.Thread(target=self._backfill, name="history-backfill", daemon=True).start()
        try:
            self.store.mark_recording(
                {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
            )
            with self.app.connection_for_read() as conn:
                self.receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
                if self.stopping.is_set() or self.lost.is_set():
                    return
                self.receiver.run(wakeup=True)
        finally:
            self.lost.set()
            flusher.join(timeout=10)
            self.receiver = None
            if self.stopping.is_set():
                self._flush()
            try:
                if self.lock.owned():
                    self.lock.release()
            except Exception:
                log.debug("lock release failed", exc_info=True)

    def _backfill(self) -> None:
        """Add tasks that finished while no monitor recorded, from the result backend."""
        backend = self.app.backend
        client = getattr(backend, "client", None)
        if client is None or not hasattr(backend, "task_keyprefix"):
            return
        try:
            last = self.store.last_event_at()
            since = last - 60 if last else time.time() - self.store.max_age_s
            prefix = bytes(backend.task_keyprefix)
            deadline = time.monotonic() + BACKFILL_BUDGET_S
            cursor, added = 0, 0
            while not (self.lost.is_set() or self.stopping.is_set()):
                cursor, keys = client.scan(cursor, match=prefix + b"*", count=1_000)
                metas = {}
                for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
                    meta = dict(backend.decode(raw)) if raw else {}
                    done = str(meta.get("date_done") or "")
                    if done and _iso_ts(done) >= since:
                        metas[key[len(prefix) :].decode()] = meta
                if metas:
                    added += self.store.backfill(metas)
                if not cursor or time.monotonic() > deadline:
                    break
            if added:
                log.info("backfilled %d task(s) from the result backend", added)
        except Exception:
            log.warning("backfill from the result backend failed", exc_info=True)

    def _flush(self) -> None:
        while self.pending:
            batch = [self.pending.popleft() for _ in range(min(len(self.pending), 2_000))]
            try:
                self.store.record(batch, enrich=self.lookup)
                if self.dropped:
                    self.store.note_dropped(self.dropped)
            except Exception as exc:
                log.warning("could not write %d events, will retry: %s", len(batch), exc)
                self.pending.extendleft(reversed(batch))
                return

    def _flush_loop(self) -> None:
        last_renew = last_enable = last_trim = 0.0
        while not self.lost.is_set():
            self.lost.wait(self.FLUSH_S)
            now = time.monotonic()
            self._flush()
            if now - last_renew > LOCK_TTL_S / 4:
                try:
                    self.lock.reacquire()
                    last_renew = now
                except LockNotOwnedError:
                    log.warning("another monitor took the recorder lock; standing by")
                    break
                except Exception as exc:  # a broker hiccup: try again at the next flush
                    log.warning("could not renew the recorder lock: %s", exc)
            if now - last_enable > self.ENABLE_EVENTS_EVERY_S:
                try:
                    self.app.control.enable_events()
                except Exception:
                    log.debug("enable_events broadcast failed", exc_info=True)
                last_enable = now
            if now - last_trim > 30:
                try:
                    self.store.maybe_trim()
                except Exception:
                    log.debug("trim failed", exc_info=True)
                last_trim = now
            self._check_parent()
            if self.stopping.is_set():
                break
        self.lost.set()
        if self.receiver is not None:
            self.receiver.should_stop = True


def run(settings: Settings, *, parent_pid: int | None = None) -> None:
    """Run the recorder in this process until stopped."""
    Monitor(settings, parent_pid=parent_pid).run()
