"""rpc:// results for this project's processes: one reply consumer per process, results and
chords kept in the state store (`stores.replies`).

Celery's rpc:// delivers a result as a message to the sender's reply queue, readable once, by
the thread that sent the task. Every task this project sends names the shared queue
`keys.RPC_REPLY_QUEUE` instead (`client_backend.reply_options`), and each process that sends
runs one `ReplyDrain`: a thread that consumes that queue, writes each result meta to the state
store (kept `result_expires`), then acknowledges it. Any thread or process, and a restarted
server, reads results there; a waiter in the process that drained the result is woken at once,
others find it on their next read (every 50-250 ms).

rpc:// has no chords (Celery refuses them): a chord's header is published as a group, the chord
is kept in the state store, and the drain that stores the header's last result sends the
callback with the results in header order (or, when a header task failed, stores the
callback's FAILURE, a ChordError naming it, as Celery's chords do).

A result of a task some other client sent went to that client's own reply queue: nobody here can
read it, and reads say so (`ResultNotVisible`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.backends.rpc import RPCBackend
from celery.canvas import Signature
from kombu.messaging import Consumer

from celery_mcp.client_backend import ClientRPCBackend, reply_queue
from celery_mcp.errors import ResultNotVisible, translate_errors
from celery_mcp.models.common import FAILED_STATES, READY_STATES
from celery_mcp.service import cancel
from celery_mcp.service.cluster import Cluster
from celery_mcp.stores import workflows as records
from celery_mcp.stores.replies import PendingChord, ReplyStore

log = logging.getLogger("celery_mcp.rpc_results")

DRAIN_TICK_S = 1.0
RECONNECT_PAUSE_S = 1.0
POLL_MIN_S = 0.05
POLL_MAX_S = 0.25


def uses_rpc(cluster: Cluster) -> bool:
    """True when the app's result backend is rpc:// (results are messages, not stored)."""
    return app_uses_rpc(cluster.app)


def app_uses_rpc(app: Celery) -> bool:
    return isinstance(app.backend, RPCBackend)


def store(cluster: Cluster) -> ReplyStore:
    """The state store's rpc:// records."""
    return ReplyStore(cluster.state, cluster.state_prefix, int(cluster.settings.result_expires_s))


class ReplyDrain:
    """The one consumer of the reply queue in this process."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = store(cluster)
        self._woken: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celery-mcp-replies", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DRAIN_TICK_S * 3)

    def _run(self) -> None:
        app = self.cluster.app
        while not self._stop.is_set():
            try:
                with app.connection_for_read() as conn:
                    queue = reply_queue(app.backend)(conn.default_channel)
                    with Consumer(  # type: ignore[no-untyped-call]
                        conn, [queue], callbacks=[self._on_message], accept=["json"], no_ack=False
                    ):
                        while not self._stop.is_set():
                            try:
                                conn.drain_events(timeout=DRAIN_TICK_S)
                            except TimeoutError:
                                continue
            except Exception:  # broker or store gone: unacked replies are delivered again
                log.debug("reply queue consumer lost its connection", exc_info=True)
                self._stop.wait(RECONNECT_PAUSE_S)

    def _on_message(self, body: Any, message: Any) -> None:
        meta = dict(body) if isinstance(body, dict) else {}
        task_id = str(meta.get("task_id") or message.properties.get("correlation_id") or "")
        if task_id:
            self.store.put(task_id, meta)
            if meta.get("status") in READY_STATES:
                chord = self.store.complete_chord(task_id)
                if chord is not None:
                    self._finish_chord(chord)
        message.ack()  # only once stored (and a chord's callback sent): else delivered again
        with self._lock:
            event = self._woken.get(task_id)
        if event is not None:
            event.set()

    def _finish_chord(self, chord: PendingChord) -> None:
        callback = Signature(chord.callback, app=self.cluster.app)
        metas = self.store.get_many(chord.header)
        failed = [i for i in chord.header if metas.get(i, {}).get("status") in FAILED_STATES]
        if failed:
            self.store.put(str(callback.id), chord_error(str(callback.id), failed[0], metas))
            return
        try:
            callback.apply_async(([metas[i].get("result") for i in chord.header],))
        except Exception:
            self.store.unfire(chord.group_id)
            raise

    def wait(self, task_id: str, timeout_s: float) -> dict[str, Any]:
        """The task's meta once it is ready, or what is known when `timeout_s` runs out
        (Cancelled when the call is cancelled first)."""
        event = threading.Event()
        with self._lock:
            self._woken[task_id] = event
        try:
            deadline = time.monotonic() + timeout_s
            pause = POLL_MIN_S
            while True:
                meta = read(self.cluster, task_id)
                remaining = deadline - time.monotonic()
                if meta.get("status") in READY_STATES or remaining <= 0:
                    return meta
                cancel.wait(event, min(pause, remaining))
                event.clear()
                pause = min(pause * 1.5, POLL_MAX_S)
        finally:
            with self._lock:
                self._woken.pop(task_id, None)


def chord_error(callback_id: str, failed_id: str, metas: dict[str, Any]) -> dict[str, Any]:
    """The FAILURE meta of a chord callback whose header task `failed_id` failed (as Celery)."""
    cause = metas[failed_id].get("result") or {}
    what = f"{cause.get('exc_type')}({cause.get('exc_message')})" if isinstance(cause, dict) else ""
    return {
        "task_id": callback_id,
        "status": "FAILURE",
        "result": {
            "exc_type": "ChordError",
            "exc_module": "celery.exceptions",
            "exc_message": [f"Dependency {failed_id} raised {what or cause!r}"],
        },
        "traceback": None,
        "children": [],
        "date_done": datetime.now(UTC).isoformat(),
    }


def drain(cluster: Cluster) -> ReplyDrain:
    """This process's reply consumer, started on first use."""
    with cluster.lock:
        if cluster.reply_drain is None:
            cluster.reply_drain = ReplyDrain(cluster)
            backend = cluster.app.backend
            if isinstance(backend, ClientRPCBackend):  # AsyncResult.state reads what is kept
                backend.read_kept = cluster.reply_drain.store.get
        drain_: ReplyDrain = cluster.reply_drain
        return drain_


def add_chord(cluster: Cluster, group_id: str, header: Sequence[str], callback: Signature) -> None:
    """Keep a chord whose header is about to be published (the drain sends its callback)."""
    drain(cluster)
    with translate_errors("backend"):
        store(cluster).add_chord(PendingChord(group_id, list(header), dict(callback)))


def read(cluster: Cluster, task_id: str) -> dict[str, Any]:
    """What the state store holds for `task_id` (PENDING when nothing yet)."""
    with translate_errors("backend"):
        return store(cluster).get(task_id)


def read_many(cluster: Cluster, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """id -> meta of the ids that have a result, one round trip."""
    with translate_errors("backend"):
        return store(cluster).get_many(ids)


def check_visible(cluster: Cluster, task_id: str, meta: dict[str, Any]) -> None:
    """Raise ResultNotVisible for an id with no result here that this project did not send
    (neither a task in the history nor a workflow of its records)."""
    if meta.get("status", "PENDING") != "PENDING":
        return
    try:
        known = cluster.history.get(task_id) is not None
        if not known:
            kv = records.StateKV(cluster.state, int(cluster.settings.result_expires_s))
            known = records.load(kv, cluster.state_prefix, task_id) is not None
    except Exception:  # nothing to ask: say nothing rather than guess
        return
    if not known:
        raise ResultNotVisible(
            f"no result of task {task_id!r} here: with rpc:// a result goes only to the client "
            "that sent the task, and this task was not sent through celery-mcp (or it is "
            "unknown)",
            hint="send it with send_task to read its result here, or give the workers and this "
            "server a Redis result backend (CELERY_MCP_RESULT_BACKEND=redis://...)",
        )
