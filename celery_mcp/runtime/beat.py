"""`celery-mcp beat`: Celery beat with a RedBeat scheduler, tuned to fire on time, never twice.

`Scheduler` is `redbeat.RedBeatScheduler` (same store, same entry format, same lock key, so it
also excludes a stock RedBeat beat) with these changes:

- Timing: the loop wakes at least every `max_interval_s` (1 s; RedBeat's default is 300 s), and
  at the exact due time of the next entry, so a new or changed entry fires within about 1 s.
  Each tick reads every entry due before the next one in one round trip (RedBeat peeks at a
  single upcoming entry, which let entries due in the same second go out up to 1 s late), and
  due-ness comes from `service.schedule_rules.next_due` (UTC arithmetic, DST-safe), the same times
  `get_periodic_task` shows.
- One run, one send: a due run is claimed with a compare-and-set on the entry's meta (WATCH the
  entry, check last_run_at is still what was loaded, then MULTI: advance it). Only the beat
  whose transaction commits sends the task, so two beats never send the same run, even if a
  stalled beat's lock expired and another took over. The lock (RedBeat's key, taken without
  blocking each tick, extended while held) keeps one beat active and the others on standby.
- Steady times: an interval entry advances to its due time, not to "now" (no drift), and a run
  missed while no beat ran is sent once, not replayed. Each run gets a deterministic task id
  `<name>:<due time>` and its due time, id and delay are stored in the entry (`celery_mcp_run`).
  An entry that has no last_run_at (written by other tools) is anchored to now instead of
  firing at once on start (RedBeat #79/#154/#192). A one-off (rrule, count=1) is disabled in
  the same transaction that claims its run.
- Liveness: every tick writes a heartbeat (node, role, last tick) to the store's heartbeat
  hash (stores.schedules), read by the `health` tool. Store errors are logged and retried;
  they do not stop beat.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from celery import Celery
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry, get_redis
from redbeat.schedules import rrule
from redis.exceptions import LockError, RedisError

from celery_mcp.client_backend import reply_options
from celery_mcp.config import Settings
from celery_mcp.runtime.connect import open_cluster
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.policy import task_allowed
from celery_mcp.service.schedule_rules import advance, next_due, run_task_id
from celery_mcp.stores.history import SentTask
from celery_mcp.stores.schedules import Entry, ScheduleStore, Write, store_location, to_score

logger = logging.getLogger("celery_mcp.beat")

DEFAULT_MAX_INTERVAL_S = 1.0
HEARTBEAT_PRUNE_S = 86_400.0  # heartbeats of beats gone this long are deleted


class Scheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat scheduler with per-run claims, a non-blocking lock and a heartbeat."""

    lock_key: str | None
    #: The cluster `run` opened (its task history notes each run); None: nothing noted.
    cluster: Cluster | None = None

    def __init__(self, app: Celery, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # RedBeat's beat_init handler blocks until it holds the lock; this class takes the
        # lock itself each tick (standby beats keep their heartbeat), so hide the key from it.
        self.lock_name = str(self.lock_key)
        self.lock_key = None
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = time.time()
        self.role = "starting"
        self._lock: Any = None

    # --- lock and heartbeat -----------------------------------------------------------------

    @property
    def client(self) -> Any:
        return get_redis(self.app)

    @cached_property
    def store(self) -> ScheduleStore:
        # `configure` set redbeat_redis_url; (called before __init__ sets lock_name)
        url, prefix, lock_key = store_location(self.app, None)
        return ScheduleStore(
            client=self.client, app=self.app, url=str(url), prefix=prefix, lock_key=lock_key
        )

    def hold_lock(self) -> bool:
        """Extend the lock if held, else try to take it (no wait). True when this beat leads."""
        if self._lock is None:
            self._lock = self.client.lock(
                self.lock_name, timeout=self.lock_timeout, thread_local=False
            )
        if self._lock.local.token is not None:
            try:
                self._lock.extend(self.lock_timeout, replace_ttl=True)
                return True
            except LockError:
                logger.warning("beat: lost the lock %s; standing by", self.lock_name)
                self._lock.local.token = None
        if self._lock.acquire(blocking=False):
            logger.info("beat: acquired the lock %s; active", self.lock_name)
            return True
        return False

    def heartbeat(self) -> None:
        self.store.write_heartbeat(
            self.node,
            {
                "node": self.node,
                "pid": os.getpid(),
                "role": self.role,
                "last_tick_at": time.time(),
                "started_at": self.started_at,
                "max_interval_s": self.max_interval,
                "timezone": str(self.app.conf.timezone or "UTC"),
            },
        )

    def prune_heartbeats(self) -> None:
        now = time.time()
        for node, beat in self.store.heartbeats().items():
            try:
                stale = now - float(beat["last_tick_at"]) > HEARTBEAT_PRUNE_S
            except (KeyError, TypeError, ValueError):
                stale = True
            if stale:
                self.store.remove_heartbeat(node)

    # --- schedule ---------------------------------------------------------------------------

    def setup_schedule(self) -> None:
        super().setup_schedule()
        self.prune_heartbeats()

    @property
    def schedule(self) -> dict[str, RedBeatSchedulerEntry]:
        """Entries due now or within the next loop interval, read in one round trip.

        RedBeat's own version peeks at only one upcoming entry, by whole-second score and then
        by key name, so with several entries due in the same second beat could sleep past the
        earliest one and send it up to a second late.
        """
        horizon = time.time() + self.max_interval + 1  # scores are whole seconds, rounded down
        entries, vanished = self.store.read_due(horizon)
        self.store.forget(vanished)  # as RedBeat does for a vanished entry
        return {e.name: self._redbeat_entry(e) for e in entries}

    def _redbeat_entry(self, entry: Entry) -> RedBeatSchedulerEntry:
        d = entry.definition
        return self.Entry(
            app=self.app,
            name=entry.name,
            task=d.get("task"),
            schedule=entry.schedule,
            args=d.get("args"),
            kwargs=d.get("kwargs"),
            options=d.get("options") or {},
            enabled=entry.enabled,
            last_run_at=entry.last_run_at,
            total_run_count=entry.total_run_count,
        )

    def tick(self, min: Any = min, **kwargs: Any) -> float:
        try:
            active = self.hold_lock()
            role = "active" if active else "standby"
            if role != self.role:
                logger.info("beat: %s is %s", self.node, role)
            self.role = role
            self.heartbeat()
            if not active:
                return float(self.max_interval)
            remaining = []
            for entry in self.schedule.values():
                next_s = self.maybe_due(entry, **self._maybe_due_kwargs)
                if next_s:
                    remaining.append(next_s)
            return float(min([*remaining, self.max_interval]))
        except RedisError as exc:
            logger.warning("beat: schedule store error (%s); retrying", exc)
            return float(self.max_interval)

    def maybe_due(self, entry: RedBeatSchedulerEntry, **kwargs: Any) -> Any:
        if entry.last_run_at is None:
            self.claim(entry, fire=False)  # never ran: anchor to now, do not fire at once
            return self.max_interval
        if not entry.enabled:
            return self.max_interval
        # due-ness from next_due (the times get_periodic_task shows), not entry.is_due():
        # celery's crontab can answer "overdue" for a whole repeated DST hour
        now = datetime.now(UTC)
        due_at = next_due(entry.schedule, entry.last_run_at)
        if due_at is None:
            return self.max_interval
        if due_at > now:
            return (due_at - now).total_seconds()
        refused = self.refusal(entry)
        claimed = self.claim(entry, fire=True, refused=refused)
        if claimed is None:
            return self.max_interval  # another beat sent it, or the entry changed or went away
        due, task_id, following = claimed
        if refused is not None:
            logger.warning("beat: did not send %s (%s): %s", entry.name, entry.task, refused)
            return self._wake_at(following)
        entry.options = {**(entry.options or {}), "task_id": task_id, **reply_options(self.app)}
        self.note_sent(entry, task_id)
        try:
            self.apply_async(entry, advance=False, **kwargs)
        except Exception:
            logger.exception("beat: could not send %s (%s)", entry.name, entry.task)
        else:
            late_ms = (datetime.now(UTC) - due).total_seconds() * 1e3
            logger.info(
                "beat: sent %s (%s) id %s, %.0f ms late", entry.name, entry.task, task_id, late_ms
            )
        return self._wake_at(following)

    def _wake_at(self, following: datetime | None) -> float:
        # wake at the next due time (celery's is_due says "one interval from now", which
        # would let each run's lateness add up)
        if following is None:
            return float(self.max_interval)
        return max((following - datetime.now(UTC)).total_seconds(), 0.001)

    def refusal(self, entry: RedBeatSchedulerEntry) -> str | None:
        """Why this due run must not be sent under the current settings (None: send it).

        Checked before each send: an entry written before the allowlist changed must not run."""
        if self.cluster is None or task_allowed(self.cluster.settings, entry.task):
            return None
        patterns = ", ".join(self.cluster.settings.task_allow)
        return f"task {entry.task!r} is not in the task allowlist ({patterns})"

    def note_sent(self, entry: Any, task_id: str) -> None:
        """Keep the run in the task history (exact args: retry_task can re-send it; on rpc://
        its result is then known to be ours). Best effort: the history never stops beat."""
        if self.cluster is None:
            return
        queue = (entry.options or {}).get("queue")
        sent = SentTask(task_id, entry.task, list(entry.args), dict(entry.kwargs), queue)
        try:
            self.cluster.history.note_sent([sent], at=time.time())
        except Exception:
            logger.warning("beat: could not note %s in the task history", task_id, exc_info=True)

    def claim(
        self, entry: RedBeatSchedulerEntry, *, fire: bool, refused: str | None = None
    ) -> tuple[datetime, str, datetime | None] | None:
        """Advance the entry's meta iff nobody did since it was loaded (`refused`: the due run
        is passed over, not counted, and the reason kept).

        Returns (due time, task id, next due time), or None when it was not this beat's to send.
        """
        now = datetime.now(UTC)
        sched = entry.schedule
        if fire:
            due, new_last = advance(sched, entry.last_run_at, now)
            count = entry.total_run_count + (refused is None)
        else:
            due, new_last, count = now, now, entry.total_run_count
        task_id = run_task_id(entry.name, due)
        following = next_due(sched, new_last)

        def change(stored: Entry | None) -> Write | None:
            if stored is None or not stored.enabled or stored.last_run_at != entry.last_run_at:
                return None
            stored.last_run_at, stored.total_run_count = new_last, count
            if fire:
                delay_ms = round((now - due).total_seconds() * 1e3, 1)
                stored.run = (
                    {"task_id": task_id, "due_at": due.isoformat(), "delay_ms": delay_ms}
                    if refused is None
                    else {"refused": refused, "due_at": due.isoformat()}
                )
                if following is None and isinstance(sched, rrule):
                    stored.definition["enabled"] = False  # a one-off that ran: keep it, disabled
            return stored, to_score(following) if stored.enabled else -1

        if self.store.update(entry.name, change) is None:
            return None
        return due, task_id, following

    # --- shutdown ---------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.store.remove_heartbeat(self.node)
            if self._lock is not None and self._lock.local.token is not None and self._lock.owned():
                self._lock.release()
                logger.info("beat: released the lock")
        except RedisError as exc:
            logger.warning("beat: could not release the lock cleanly (%s)", exc)
        self._lock = None
        super().close()

    @property
    def info(self) -> str:
        return (
            f"       . store -> {self.app.redbeat_conf.key_prefix!r}, "
            f"lock `{self.lock_name}` ({self.lock_timeout}s), node {self.node}"
        )


def configure(
    app: Celery, settings: Settings, max_interval_s: float, state_url: str | None = None
) -> None:
    """Point RedBeat at the store the service uses, with bounded sockets and a short loop."""
    url, _, _ = store_location(app, state_url)
    if url is None:
        raise SystemExit(
            "celery-mcp beat: schedules need a Redis/Valkey store; use a redis:// broker, "
            "set CELERY_MCP_STATE_URL, or set redbeat_redis_url in your Celery app"
        )
    timeout = max(2.0, settings.broker_timeout_s)
    conf = app.conf
    if not conf.get("redbeat_redis_url"):
        conf.redbeat_redis_url = url
    if not conf.get("redbeat_redis_options"):
        conf.redbeat_redis_options = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 10,
        }
    conf.beat_max_loop_interval = max_interval_s
    if not conf.get("redbeat_lock_timeout"):  # RedBeat's 5 loops, but never under 5 s
        conf.redbeat_lock_timeout = max(5.0, 5 * max_interval_s)


def run(
    settings: Settings, *, max_interval_s: float = DEFAULT_MAX_INTERVAL_S, loglevel: str = "INFO"
) -> None:
    """Run beat in this process until SIGTERM/SIGINT (the lock is released on the way out)."""
    if not 0 < max_interval_s <= 300:
        raise SystemExit(f"celery-mcp beat: --max-interval {max_interval_s:g} must be in (0, 300]")
    cluster = open_cluster(settings, worker=True)  # a daemon: reconnect like a worker does
    app = cluster.app
    configure(app, settings, max_interval_s, cluster.state_url)
    Scheduler.cluster = cluster
    app.set_current()  # RedBeat decodes schedules without an app: make ours the current one
    app.set_default()
    app.Beat(
        scheduler=f"{__name__}:Scheduler",
        max_interval=max_interval_s,
        loglevel=loglevel,
        quiet=True,
    ).run()
