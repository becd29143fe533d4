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
  whose transaction commits sends the task, so two beats never claim the same run, even if a
  stalled beat's lock expired and another took over. The lock (RedBeat's key, taken without
  blocking each tick, extended while held) keeps one beat active and the others on standby.
- Delivery (runtime.beat_runs): the claim records the run as claimed, not yet sent (its task
  id, due time and deadline); after the publish it is recorded sent and only then counted.
  A run left unsent (publish failed, or its beat died) is re-sent under the same task id by
  whoever leads next, until its deadline (the next due time, or `expires` after the claim),
  then recorded missed with the reason. Each re-send first takes the attempt in the store (two
  beats never re-send the same one) and asks the result backend whether an earlier attempt
  went out. The one remaining double: a beat that dies (or stalls past the lock timeout)
  between its publish and recording it sent, while the worker has not stored a state yet:
  the re-send goes out under the same task id (`last_send_attempts` > 1).
- Steady times: an interval entry advances to its due time, not to "now" (no drift), and runs
  missed while no beat ran are sent once, not replayed (the others are recorded missed). Each
  run gets a deterministic task id `<name>:<due time>`; its record is the entry's
  `celery_mcp_run` field (stores.schedules `RunLog`).
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

from celery import Celery, states
from celery.backends.base import KeyValueStoreBackend
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry, get_redis
from redis.exceptions import LockError, RedisError

from celery_mcp.client_backend import reply_options
from celery_mcp.config import Settings
from celery_mcp.runtime.beat_runs import RunBook
from celery_mcp.runtime.connect import open_cluster
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.policy import task_allowed
from celery_mcp.service.schedule_rules import next_due
from celery_mcp.stores.history import SentTask
from celery_mcp.stores.schedules import Entry, PendingRun, ScheduleStore, store_location

logger = logging.getLogger("celery_mcp.beat")

DEFAULT_MAX_INTERVAL_S = 1.0
#: Test hooks, read from the environment of `celery-mcp beat` (test-only).
TEST_CLAIM_PAUSE_ENV = "CELERY_MCP_BEAT_TEST_CLAIM_PAUSE_S"
TEST_REFUSE_PUBLISHES_ENV = "CELERY_MCP_BEAT_TEST_REFUSE_PUBLISHES"
TEST_SENT_PAUSE_ENV = "CELERY_MCP_BEAT_TEST_SENT_PAUSE_S"
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
        self._loaded: dict[str, Entry] = {}  # this tick's entries as stored (with run logs)
        # test hooks (never set them in production): widen the claim -> publish gap or the
        # publish -> record gap, and send the first N publishes where connections are refused
        self.claim_pause_s = float(os.environ.get(TEST_CLAIM_PAUSE_ENV) or 0)
        self.sent_pause_s = float(os.environ.get(TEST_SENT_PAUSE_ENV) or 0)
        self.refuse_publishes = int(os.environ.get(TEST_REFUSE_PUBLISHES_ENV) or 0)

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
        self._loaded = {e.name: e for e in entries}
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
        loaded = self._loaded.get(entry.name)
        pending = loaded.run.pending if loaded is not None else None
        if pending is not None and not self.settle(entry, pending, resend=True, **kwargs):
            return self.max_interval  # still unsent: tried again next tick, until its deadline
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
            return self.max_interval  # another beat claimed it, or the entry changed or went away
        run, following = claimed
        if run is None:
            logger.warning("beat: did not send %s (%s): %s", entry.name, entry.task, refused)
            return self._wake_at(following)
        if self.claim_pause_s:
            logger.warning("beat: test hook: claimed %s, pausing before the publish", run.task_id)
            time.sleep(self.claim_pause_s)
        self.settle(entry, run, resend=False, **kwargs)
        return self._wake_at(following)

    def settle(
        self, entry: RedBeatSchedulerEntry, run: PendingRun, *, resend: bool, **kwargs: Any
    ) -> bool:
        """Publish a claimed run and record it sent (or missed, past its deadline).

        `resend`: the run was claimed on an earlier tick (by this beat or one that stopped):
        take the next attempt first, so two beats never re-send it at once, and skip the
        publish when the result backend already knows the task (an earlier attempt went out).
        True when the run is settled (sent or missed), False when it is still unsent.
        """
        if datetime.now(UTC) >= run.deadline:
            why = run.error or f"the beat that claimed it ({run.claimed_by}) stopped"
            self.record_missed(entry.name, run, f"not sent by its deadline: {why}")
            return True
        if resend:
            taken = self.runs.take_attempt(entry.name, run)
            if taken is None:
                return True  # another beat settled or took it
            run = taken
            if self.published_already(run.task_id):
                self.record_sent(entry, run, already=True)
                return True
        entry.options = {
            **(entry.options or {}),
            "task_id": run.task_id,
            **reply_options(self.app),
        }
        self.note_sent(entry, run.task_id)
        try:
            self.publish(entry, **kwargs)
        except Exception as exc:
            logger.warning(
                "beat: could not send %s (%s) id %s (attempt %d, retried until %s): %s",
                entry.name,
                entry.task,
                run.task_id,
                run.attempts,
                run.deadline.isoformat(),
                exc,
            )
            self.runs.failed(entry.name, run, f"{type(exc).__name__}: {exc}"[:300])
            return False
        if self.sent_pause_s:
            logger.warning("beat: test hook: published %s, pausing before the record", run.task_id)
            time.sleep(self.sent_pause_s)
        self.record_sent(entry, run)
        return True

    def publish(self, entry: RedBeatSchedulerEntry, **kwargs: Any) -> None:
        """Send the run (through a refused connection while the test hook says so)."""
        if self.refuse_publishes <= 0:
            self.apply_async(entry, advance=False, **kwargs)
            return
        self.refuse_publishes -= 1
        with socket.socket() as closed:  # bound, never listening: connections are refused
            closed.bind(("127.0.0.1", 0))
            url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
            with self.app.connection_for_write(url) as conn:
                refused = {**kwargs, "producer": self.app.amqp.Producer(conn)}
                self.apply_async(entry, advance=False, **refused)

    def published_already(self, task_id: str) -> bool:
        """True when the result backend has a state for `task_id` (its message went out).

        Only key-value backends are asked: reading rpc:// results consumes replies."""
        backend = self.app.backend
        if not isinstance(backend, KeyValueStoreBackend):
            return False
        try:
            return bool(backend.get_task_meta(task_id).get("status") != states.PENDING)
        except Exception:
            logger.warning("beat: could not read the state of %s", task_id, exc_info=True)
            return False

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

    # --- the run's record -------------------------------------------------------------------

    @cached_property
    def runs(self) -> RunBook:
        return RunBook(self.store, self.node)

    def claim(
        self, entry: RedBeatSchedulerEntry, *, fire: bool, refused: str | None = None
    ) -> tuple[PendingRun | None, datetime | None] | None:
        """`RunBook.claim` (the per-run compare-and-set) for `entry`."""
        return self.runs.claim(entry, fire=fire, refused=refused)

    def record_sent(
        self, entry: RedBeatSchedulerEntry, run: PendingRun, *, already: bool = False
    ) -> None:
        """The run was published (`already`: by an earlier attempt, the result backend knows
        it): count it, keep its id and delay."""
        delay_ms = round((datetime.now(UTC) - run.due_at).total_seconds() * 1e3, 1)
        self.runs.sent(entry.name, run, delay_ms)
        if already:
            logger.info("beat: %s was already published (result backend); recorded", run.task_id)
            return
        again = f", attempt {run.attempts}" if run.attempts > 1 else ""
        logger.info(
            "beat: sent %s (%s) id %s, %.0f ms late%s",
            entry.name,
            entry.task,
            run.task_id,
            delay_ms,
            again,
        )

    def record_missed(self, name: str, run: PendingRun, reason: str) -> None:
        if self.runs.missed(name, run, reason):
            logger.warning("beat: missed %s id %s: %s", name, run.task_id, reason)

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
    app: Celery,
    settings: Settings,
    max_interval_s: float,
    state_url: str | None = None,
    lock_timeout_s: float | None = None,
) -> None:
    """Point RedBeat at the store the service uses, with bounded sockets and a short loop
    (`lock_timeout_s`: how soon a standby takes over from a beat that died)."""
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
    if lock_timeout_s is not None:
        conf.redbeat_lock_timeout = lock_timeout_s
    elif not conf.get("redbeat_lock_timeout"):  # RedBeat's 5 loops, but never under 5 s
        conf.redbeat_lock_timeout = max(5.0, 5 * max_interval_s)


def run(
    settings: Settings,
    *,
    max_interval_s: float = DEFAULT_MAX_INTERVAL_S,
    lock_timeout_s: float | None = None,
    loglevel: str = "INFO",
) -> None:
    """Run beat in this process until SIGTERM/SIGINT (the lock is released on the way out)."""
    if not 0 < max_interval_s <= 300:
        raise SystemExit(f"celery-mcp beat: --max-interval {max_interval_s:g} must be in (0, 300]")
    if lock_timeout_s is not None and lock_timeout_s < 2 * max_interval_s:
        raise SystemExit(
            f"celery-mcp beat: --lock-timeout {lock_timeout_s:g} must be at least twice "
            f"--max-interval ({max_interval_s:g}), or the lock lapses between ticks"
        )
    cluster = open_cluster(settings, worker=True)  # a daemon: reconnect like a worker does
    app = cluster.app
    configure(app, settings, max_interval_s, cluster.state_url, lock_timeout_s)
    Scheduler.cluster = cluster
    app.set_current()  # RedBeat decodes schedules without an app: make ours the current one
    app.set_default()
    app.Beat(
        scheduler=f"{__name__}:Scheduler",
        max_interval=max_interval_s,
        loglevel=loglevel,
        quiet=True,
    ).run()
