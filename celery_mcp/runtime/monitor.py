"""`celery-mcp monitor`: records Celery events into the task history (stores.history).

Why a monitor process. Celery events are Redis PUBLISHes that nobody stores, so something must
listen while tasks run. The MCP server is the wrong listener: a stdio server lives only as long
as one client session. Worker signals would cover only `celery-mcp worker` processes and add a
write to every task. A small monitor sees every worker that emits events (it broadcasts
`enable_events` every minute for workers started without -E), runs while no MCP server does,
and holds a Redis lock, so any number can be started (`serve --with-worker`,
`worker --monitor`, a service unit): one records, the others stand by and take over within
the lock's TTL (LOCK_TTL_S, or CELERY_MCP_MONITOR_LOCK_TTL_S) of its death. A thread of its
own renews the lock, so a backlog of events never lets it expire; a recorder that finds it
lost stops writing and stands by. On start it backfills, from the result backend, the tasks that
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
LOCK_TTL_ENV = "CELERY_MCP_MONITOR_LOCK_TTL_S"
BACKFILL_BUDGET_S = 60.0


def _iso_ts(text: str) -> float:
    """Unix time of an ISO 8601 string (UTC when it has no offset); -inf when unreadable."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return -math.inf
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def lock_ttl_s() -> float:
    """The recorder lock's TTL: LOCK_TTL_S, or CELERY_MCP_MONITOR_LOCK_TTL_S when set (> 0)."""
    raw = os.environ.get(LOCK_TTL_ENV, "")
    try:
        ttl = float(raw) if raw.strip() else LOCK_TTL_S
    except ValueError:
        ttl = math.nan
    if not (math.isfinite(ttl) and ttl > 0):
        log.warning("ignoring %s=%r: not a positive number of seconds", LOCK_TTL_ENV, raw)
        return LOCK_TTL_S
    return ttl


def backend_lookup(app: Any) -> Callable[[list[str]], dict[str, dict[str, Any]]] | None:
    """Batch reader of result-backend metas (key-value backends), or None."""
    backend = app.backend
    if not isinstance(backend, BaseKeyValueStoreBackend):
        return None
    return lambda ids: read_metas(backend, ids)


class Monitor:
    """The recorder process: capture events, write them in batches, keep the lock, trim.

    Threads while recording: the event receiver (fills `pending`), the flusher (writes it),
    the backfill, and the lock keeper, which renews the lock every TTL/3 whatever the backlog.
    Every write checks `holds_lock()` first; when the keeper cannot confirm the lock (taken
    over, expired, or unreachable until too late) recording stops and the monitor stands by.
    """

    FLUSH_S = 0.25
    BATCH = 2_000
    MAX_PENDING = 200_000
    ENABLE_EVENTS_EVERY_S = 60.0
    #: Writes stop this fraction of the TTL before the lock could expire (a write in flight
    #: then still lands inside the lock's lifetime).
    WRITE_MARGIN = 0.25

    def __init__(self, settings: Settings, *, parent_pid: int | None = None) -> None:
        self.settings = settings
        cluster = open_cluster(settings, worker=True)  # reconnect forever, like a worker
        self.app = cluster.app
        json_only(self.app)  # events from a user's pickle-configured app are never unpickled
        self.store = cluster.history
        self.lookup = backend_lookup(self.app)
        self.parent_pid = parent_pid
        self.ttl_s = lock_ttl_s()
        self.lock = self.store.recorder_lock(self.ttl_s)
        #: monotonic time until which the lock is surely ours (taken before the command that
        #: set its TTL was sent); 0 when not held
        self.held_until = 0.0
        self.pending: deque[dict[str, Any]] = deque()
        self.stopping = threading.Event()
        self.ended = threading.Event()  # this recording session is over: its threads stop
        self.releasing = threading.Event()  # the lock keeper stops (after the last write)
        self.receiver: Any = None
        self.dropped = 0
        self.cluster = cluster

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        if self.receiver is not None:
            self.receiver.should_stop = True

    def holds_lock(self) -> bool:
        """Whether this monitor may write: the lock is its own for WRITE_MARGIN more at least."""
        return time.monotonic() < self.held_until - self.ttl_s * self.WRITE_MARGIN

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
                asked = time.monotonic()
                acquired = self.lock.acquire()
                if acquired:
                    self.held_until = asked + self.ttl_s
                elif not standing_by:
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

    def _end(self) -> None:
        """End this recording session: its threads stop, the receiver returns."""
        self.ended.set()
        if self.receiver is not None:
            self.receiver.should_stop = True

    def _record(self) -> None:
        self.ended.clear()
        self.releasing.clear()
        keeper = threading.Thread(target=self._keep_lock, name="history-lock", daemon=True)
        keeper.start()
        flusher = threading.Thread(target=self._flush_loop, name="history-flush", daemon=True)
        flusher.start()
        threading.Thread(target=self._backfill, name="history-backfill", daemon=True).start()
        try:
            self.store.mark_recording(
                {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
            )
            with self.app.connection_for_read() as conn:
                self.receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
                if self.stopping.is_set() or self.ended.is_set():
                    return
                self.receiver.run(wakeup=True)
        finally:
            self.ended.set()
            flusher.join(timeout=10)
            self.receiver = None
            if self.stopping.is_set():
                self._flush()  # the keeper still renews meanwhile
            self.releasing.set()
            keeper.join(timeout=10)
            self.held_until = 0.0
            try:
                if self.lock.owned():
                    self.lock.release()
            except Exception:
                log.debug("lock release failed", exc_info=True)

    def _keep_lock(self) -> None:
        """Renew the lock every TTL/3 (compare-and-set), on time whatever the flusher does.

        `Lock.reacquire` runs a Lua script: PEXPIRE only while GET == our token. When the lock
        is not ours any more, or cannot be renewed before writes would have to stop, recording
        ends (the monitor goes back to standing by), so two monitors never write at once.
        """
        every = self.ttl_s / 3
        due = time.monotonic() + every
        while not self.releasing.wait(max(0.0, due - time.monotonic())):
            asked = time.monotonic()
            try:
                self.lock.reacquire()
            except LockNotOwnedError:
                log.warning("the recorder lock is no longer ours; standing by")
                self._lost()
                return
            except Exception as exc:  # a broker hiccup: retry soon, while writes may go on
                if not self.holds_lock():
                    log.warning("could not renew the recorder lock in time: %s", exc)
                    self._lost()
                    return
                log.warning("could not renew the recorder lock, retrying: %s", exc)
                due = time.monotonic() + self.ttl_s / 10
                continue
            self.held_until = asked + self.ttl_s
            due = asked + every

    def _lost(self) -> None:
        """Stop writing at once and end the recording session (the monitor then stands by)."""
        self.held_until = 0.0
        self._end()

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
            while not (self.ended.is_set() or self.stopping.is_set()):
                cursor, keys = client.scan(cursor, match=prefix + b"*", count=1_000)
                metas = {}
                for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
                    meta = dict(backend.decode(raw)) if raw else {}
                    done = str(meta.get("date_done") or "")
                    if done and _iso_ts(done) >= since:
                        metas[key[len(prefix) :].decode()] = meta
                if metas and self.holds_lock():
                    added += self.store.backfill(metas)
                if not cursor or time.monotonic() > deadline:
                    break
            if added:
                log.info("backfilled %d task(s) from the result backend", added)
        except Exception:
            log.warning("backfill from the result backend failed", exc_info=True)

    def _flush(self, interrupt: threading.Event | None = None) -> None:
        """Write the events pending now (not those arriving meanwhile) while the lock is ours.

        Stops between batches once `interrupt` is set.
        """
        todo = len(self.pending)
        while todo > 0 and self.pending and self.holds_lock():
            if interrupt is not None and interrupt.is_set():
                return
            size = min(todo, len(self.pending), self.BATCH)
            batch = [self.pending.popleft() for _ in range(size)]
            try:
                self.store.record(batch, enrich=self.lookup)
                if self.dropped:
                    self.store.note_dropped(self.dropped)
            except Exception as exc:
                log.warning("could not write %d events, will retry: %s", len(batch), exc)
                self.pending.extendleft(reversed(batch))
                return
            todo -= len(batch)

    def _flush_loop(self) -> None:
        """Write pending events in batches; broadcast enable_events, trim, watch the parent."""
        last_enable = last_trim = 0.0
        while not self.ended.is_set():
            behind = len(self.pending) >= self.BATCH and self.holds_lock()
            self.ended.wait(0.0 if behind else self.FLUSH_S)
            now = time.monotonic()
            self._flush(interrupt=self.ended)
            if now - last_enable > self.ENABLE_EVENTS_EVERY_S:
                try:
                    self.app.control.enable_events()
                except Exception:
                    log.debug("enable_events broadcast failed", exc_info=True)
                last_enable = now
            if now - last_trim > 30 and self.holds_lock():
                try:
                    self.store.maybe_trim()
                except Exception:
                    log.debug("trim failed", exc_info=True)
                last_trim = now
            self._check_parent()
            if self.stopping.is_set():
                break
        self._end()


def run(settings: Settings, *, parent_pid: int | None = None) -> None:
    """Run the recorder in this process until stopped."""
    Monitor(settings, parent_pid=parent_pid).run()
