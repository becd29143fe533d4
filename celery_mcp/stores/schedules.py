"""The schedule store: periodic-task entries in celery-redbeat's format, with our own meta.

This module owns the format; the schedules tools (service.schedules) and `celery-mcp beat`
(runtime.beat) both read and write entries through it, so a stock
`celery beat -S redbeat.RedBeatScheduler` on the same app runs the same entries:

    <prefix><name>          hash: `definition` (JSON: name, task, args, kwargs, options,
                            schedule, enabled) and `meta` (JSON: last_run_at, total_run_count),
                            as RedBeat writes them; plus fields RedBeat never reads:
                            keys.SCHEDULE_EXTRA_FIELD (created/updated) and
                            keys.SCHEDULE_RUN_FIELD (`RunLog`: the last run sent, the run
                            claimed and not yet sent, the runs missed)
    <prefix>:schedule       sorted set: entry key -> next due time (whole epoch s); -1 = never
    <prefix>:lock           RedBeat's beat lock
    <prefix>BEATS_SUFFIX    hash: beat node -> heartbeat JSON

The prefix is the app's `redbeat_key_prefix` (default `redbeat:`). Every change goes through
`update`, which reads the entry inside a WATCH and writes it back in one transaction, so two
writers (a tool and a beat, or two tools) never undo each other's change. An entry with a run
claimed and not yet sent keeps that run's due time as its score, whoever writes it, so the
leading beat reads it again on every tick until the run is sent or recorded missed.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

import redis
from celery import Celery
from celery.schedules import BaseSchedule
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder

from celery_mcp.stores.clients import is_redis_url
from celery_mcp.stores.keys import BEATS_SUFFIX, SCHEDULE_EXTRA_FIELD, SCHEDULE_RUN_FIELD

FIELDS = ("definition", "meta", SCHEDULE_EXTRA_FIELD, SCHEDULE_RUN_FIELD)
WRITE_ATTEMPTS = 5
MISSED_KEPT = 10  # missed-run records kept per entry (missed_count counts them all)


class EntryConflict(Exception):
    """The entry kept changing under `update` (another writer on every attempt)."""


def encode(value: Any) -> str:
    """RedBeat's JSON (schedules, datetimes) of a definition or meta."""
    return json.dumps(value, cls=RedBeatJSONEncoder)


def decode(raw: str | None) -> Any:
    return json.loads(raw, cls=RedBeatJSONDecoder) if raw else None


def bind(sched: BaseSchedule, app: Celery) -> BaseSchedule:
    """Make a decoded schedule use `app`'s timezone and clock (RedBeat decodes without app)."""
    sched.app = app
    for cached in ("tz", "utc_enabled"):
        sched.__dict__.pop(cached, None)
    return sched


def to_score(due: datetime | None) -> float:
    """Sorted-set score RedBeat uses: whole epoch seconds of the due time; -1 = never."""
    return -1 if due is None else calendar.timegm(due.utctimetuple())


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass
class PendingRun:
    """A run claimed and not yet published: re-sent under `task_id` until `deadline`."""

    task_id: str
    due_at: datetime
    deadline: datetime
    claimed_by: str  # beat node that holds the current publish attempt
    attempts: int = 1  # publishes started (the claim starts the first)
    error: str | None = None  # why the last attempt failed (None: unknown or not yet tried)

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "due_at": _iso(self.due_at),
            "deadline": _iso(self.deadline),
            "claimed_by": self.claimed_by,
            "attempts": self.attempts,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        return cls(
            task_id=str(raw["task_id"]),
            due_at=datetime.fromisoformat(raw["due_at"]),
            deadline=datetime.fromisoformat(raw["deadline"]),
            claimed_by=str(raw.get("claimed_by") or ""),
            attempts=int(raw.get("attempts") or 1),
            error=raw.get("error"),
        )


@dataclass
class MissedRun:
    """Due runs that were never published, and why."""

    due_at: datetime
    reason: str
    recorded_at: datetime
    task_id: str | None = None  # the claimed run's id (None: runs coalesced, never claimed)
    runs: int = 1  # due times this record stands for, from due_at on

    def to_json(self) -> dict[str, Any]:
        return {
            "due_at": _iso(self.due_at),
            "reason": self.reason,
            "recorded_at": _iso(self.recorded_at),
            "task_id": self.task_id,
            "runs": self.runs,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        return cls(
            due_at=datetime.fromisoformat(raw["due_at"]),
            reason=str(raw.get("reason") or ""),
            recorded_at=datetime.fromisoformat(raw["recorded_at"]),
            task_id=raw.get("task_id"),
            runs=int(raw.get("runs") or 1),
        )


@dataclass
class RunLog:
    """What beat did with an entry's runs (keys.SCHEDULE_RUN_FIELD).

    A run goes claimed (`pending`) -> published (`task_id`, counted in total_run_count) or
    missed (`missed`, with the reason); a refused run (task allowlist) is neither.
    """

    task_id: str | None = None  # the last run published
    due_at: datetime | None = None  # its due time (or the refused run's)
    delay_ms: float | None = None  # how late after due_at it was published
    attempts: int = 0  # publishes started for it: over 1, it was re-sent
    refused: str | None = None  # why the last due run was passed over, not sent
    pending: PendingRun | None = None
    missed: list[MissedRun] = field(default_factory=list)  # newest last, MISSED_KEPT at most
    missed_count: int = 0  # every missed due time so far

    def sent(self, run: PendingRun, delay_ms: float) -> None:
        self.task_id, self.due_at, self.delay_ms = run.task_id, run.due_at, delay_ms
        self.attempts, self.refused, self.pending = run.attempts, None, None

    def refuse(self, reason: str, due_at: datetime) -> None:
        self.task_id, self.due_at, self.delay_ms, self.attempts = None, due_at, None, 0
        self.refused = reason

    def miss(self, missed: MissedRun) -> None:
        if self.pending is not None and self.pending.task_id == missed.task_id:
            self.pending = None
        self.missed = [*self.missed, missed][-MISSED_KEPT:]
        self.missed_count += missed.runs

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        if self.refused is not None:
            raw |= {"refused": self.refused, "due_at": _iso(self.due_at)}
        elif self.task_id is not None:
            raw |= {"task_id": self.task_id, "due_at": _iso(self.due_at)}
            raw |= {"delay_ms": self.delay_ms, "attempts": self.attempts}
        if self.pending is not None:
            raw["pending"] = self.pending.to_json()
        if self.missed_count:
            raw["missed"] = [m.to_json() for m in self.missed]
            raw["missed_count"] = self.missed_count
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        """Also reads the records of earlier versions ({task_id, due_at, delay_ms})."""
        pending = raw.get("pending")
        return cls(
            task_id=raw.get("task_id"),
            due_at=_time(raw.get("due_at")),
            delay_ms=raw.get("delay_ms"),
            attempts=int(raw.get("attempts") or (1 if raw.get("task_id") else 0)),
            refused=raw.get("refused"),
            pending=PendingRun.from_json(pending) if pending else None,
            missed=[MissedRun.from_json(m) for m in raw.get("missed") or []],
            missed_count=int(raw.get("missed_count") or 0),
        )


@dataclass
class Entry:
    """One stored entry, decoded."""

    name: str
    definition: dict[str, Any]
    last_run_at: datetime | None = None
    total_run_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # SCHEDULE_EXTRA_FIELD
    run: RunLog = field(default_factory=RunLog)  # SCHEDULE_RUN_FIELD

    @property
    def schedule(self) -> BaseSchedule:
        sched: BaseSchedule = self.definition["schedule"]
        return sched

    @property
    def task(self) -> str:
        return str(self.definition.get("task"))

    @property
    def enabled(self) -> bool:
        return bool(self.definition.get("enabled", True))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.definition.get("options") or {})


#: What `update`'s change returns: the entry to write and its score (next due, `to_score`).
Write = tuple[Entry, float]


def store_location(app: Celery, fallback_url: str | None) -> tuple[str | None, str, str]:
    """(URL or None, key prefix, lock key) of the app's RedBeat store.

    The app's own `redbeat_redis_url` wins, else the broker URL when it is Redis, else
    `fallback_url` (the state store); None when none is Redis.
    """
    conf = app.conf
    url = conf.get("redbeat_redis_url") or str(conf.broker_url or "")
    if not is_redis_url(url):
        url = fallback_url or ""
    prefix = conf.get("redbeat_key_prefix") or "redbeat:"
    lock_key = conf.get("redbeat_lock_key") or prefix + ":lock"
    if not lock_key.startswith(prefix):
        lock_key = prefix + lock_key
    return (url if is_redis_url(url) else None), prefix, lock_key


@dataclass(frozen=True)
class ScheduleStore:
    """Where RedBeat keeps entries (a bounded, decoding client and the key names), and the
    reads and atomic writes every user of the store shares."""

    client: Any
    app: Celery
    url: str
    prefix: str
    lock_key: str

    @property
    def schedule_key(self) -> str:
        return self.prefix + ":schedule"

    @property
    def beats_key(self) -> str:
        return self.prefix + BEATS_SUFFIX

    def key(self, name: str) -> str:
        return self.prefix + name

    def name_of(self, key: str) -> str:
        return key.removeprefix(self.prefix)

    # -- reading -------------------------------------------------------------------------------

    def names(self, limit: int) -> list[str]:
        """Up to `limit` entry names, soonest due first (one read of the schedule index)."""
        return [self.name_of(k) for k in self.client.zrange(self.schedule_key, 0, limit - 1)]

    def _entry(self, name: str, raw: list[str | None]) -> Entry | None:
        definition_raw, meta_raw, extra_raw, run_raw = raw
        if not definition_raw:
            return None
        definition = decode(definition_raw)
        bind(definition["schedule"], self.app)
        meta = decode(meta_raw) or {}
        return Entry(
            name=name,
            definition=definition,
            last_run_at=meta.get("last_run_at"),
            total_run_count=int(meta.get("total_run_count") or 0),
            extra=decode(extra_raw) or {},
            run=RunLog.from_json(decode(run_raw) or {}),
        )

    def read(self, name: str) -> Entry | None:
        """The entry `name`, or None."""
        return self._entry(name, self.client.hmget(self.key(name), FIELDS))

    def _read_keys(self, keys: list[str]) -> list[Entry]:
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, FIELDS)
            raws = pipe.execute()
        entries = (self._entry(self.name_of(k), raw) for k, raw in zip(keys, raws, strict=True))
        return [e for e in entries if e is not None]

    def read_all(self) -> list[Entry]:
        """Every entry, sorted by name (one round trip for the keys, one for the entries)."""
        return self._read_keys(sorted(self.client.zrange(self.schedule_key, 0, -1)))

    def read_due(self, before_s: float) -> tuple[list[Entry], list[str]]:
        """(entries due at or before epoch `before_s`, keys whose entry vanished)."""
        keys = list(self.client.zrangebyscore(self.schedule_key, 0, before_s))
        entries = self._read_keys(keys)
        found = {self.key(e.name) for e in entries}
        return entries, [k for k in keys if k not in found]

    def forget(self, keys: list[str]) -> None:
        """Drop schedule scores whose entry is gone (as RedBeat does)."""
        if keys:
            self.client.zrem(self.schedule_key, *keys)

    def counts(self) -> tuple[int, int]:
        """(entries, entries with a next run)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(self.schedule_key)
            pipe.zcount(self.schedule_key, 0, "+inf")
            total, scheduled = pipe.execute()
        return int(total), int(scheduled)

    def overdue(self, before_s: float, limit: int) -> dict[str, float]:
        """name -> due time (epoch s) of up to `limit` entries due before `before_s`."""
        rows = self.client.zrangebyscore(
            self.schedule_key, 1, before_s, start=0, num=limit, withscores=True
        )
        return {self.name_of(str(k)): float(s) for k, s in rows}

    def lock_ttl_ms(self) -> int:
        """Milliseconds left on the beat lock (<= 0: nobody holds it)."""
        return int(self.client.pttl(self.lock_key))

    # -- writing -------------------------------------------------------------------------------

    def _fields(self, entry: Entry) -> dict[str, str]:
        return {
            "definition": encode(entry.definition),
            "meta": encode(
                {"last_run_at": entry.last_run_at, "total_run_count": entry.total_run_count}
            ),
            SCHEDULE_EXTRA_FIELD: json.dumps(entry.extra),
            SCHEDULE_RUN_FIELD: json.dumps(entry.run.to_json()),
        }

    def update(self, name: str, change: Callable[[Entry | None], Write | None]) -> Entry | None:
        """Read `name` inside a WATCH, let `change` decide what to write, write it atomically.

        `change` gets the stored entry (None when there is none) and returns (entry, score) to
        write, or None to write nothing; it may raise to refuse. When another writer changes the
        entry in between, `change` runs again on what is stored then (EntryConflict after
        WRITE_ATTEMPTS). An entry with a pending run is scored at that run's due time (beat
        must read it until the run is settled). Returns the entry written, or None.
        """
        key = self.key(name)
        for _ in range(WRITE_ATTEMPTS):
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    decided = change(self._entry(name, pipe.hmget(key, FIELDS)))
                    if decided is None:
                        return None
                    entry, score = decided
                    if entry.run.pending is not None:
                        score = to_score(entry.run.pending.due_at)
                    pipe.multi()
                    pipe.hset(key, mapping=self._fields(entry))
                    pipe.zadd(self.schedule_key, {key: score})
                    pipe.execute()
                    return entry
                except redis.WatchError:
                    continue
        raise EntryConflict(name)

    def remove(self, name: str) -> None:
        key = self.key(name)
        with self.client.pipeline() as pipe:
            pipe.zrem(self.schedule_key, key)
            pipe.delete(key)
            pipe.execute()

    # -- beat heartbeats -----------------------------------------------------------------------

    def write_heartbeat(self, node: str, beat: dict[str, Any]) -> None:
        self.client.hset(self.beats_key, node, json.dumps(beat))

    def remove_heartbeat(self, node: str) -> None:
        self.client.hdel(self.beats_key, node)

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """node -> the heartbeat it wrote last (fresh or not); unreadable ones as {}."""
        beats: dict[str, dict[str, Any]] = {}
        for node, raw in self.client.hgetall(self.beats_key).items():
            try:
                beats[str(node)] = dict(json.loads(raw))
            except (ValueError, TypeError):
                beats[str(node)] = {}
        return beats
