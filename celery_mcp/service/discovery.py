"""Which workers are alive and which task names they know, fast and bounded.

Celery's `inspect()` waits its whole timeout unless it is told how many replies to expect
(`limit`). On a Redis broker two cheap reads (about 0.1 ms each) give that number and the names
behind it:

- every worker binds its mailbox queue `<hostname>.celery.pidbox` to the `celery.pidbox`
  exchange, and kombu records the binding in a set; a clean shutdown removes it, a killed or
  crashed worker leaves it behind. The set names every worker that *should* answer;
- every living worker subscribes to the exchange's pub/sub channel. PUBLISH returns how many
  clients received a message, and kombu ignores an empty one, so publishing `""` counts the
  workers that *can* answer (a killed process's connection is closed by its OS at once).

`request()`, the one funnel every worker command goes through, waits for exactly that many
replies. A registered worker that stays silent is reported missing, never dropped:
`disconnected` when every connected worker answered (it died without unregistering), `no_reply`
when a connected worker stayed silent for the whole timeout (busy, frozen or slow).

On AMQP (RabbitMQ) the broker cannot list the workers, but it can say whether one is there: a
worker's mailbox queue `<hostname>.celery.pidbox` is exclusive to its connection, so a passive
declare from another connection fails with 405 RESOURCE_LOCKED while the worker is connected
and 404 NOT_FOUND once it is gone (RabbitMQ deletes the queue when the connection closes; 2-4 ms
a probe). The names probed are the workers that answered this process before and those the task
history saw announce themselves (worker events); a worker the history saw go offline was
stopped cleanly and is dropped, one whose queue vanished otherwise is reported `disconnected`
once and then forgotten. A worker nobody has seen yet answers the same broadcast: replies are
taken `UNSEEN_GRACE_S` past the expected ones; one slower than that is found by a roll call
(the first broadcast of a process waits its whole timeout, and so does a background ping every
`ROLL_CALL_EVERY_S`). Other brokers wait the timeout unless the caller names the workers.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from amqp.exceptions import NotFound, ResourceLocked
from kombu.utils.uuid import uuid

from celery_mcp.errors import UnknownTask, WaitTimeout, translate_errors
from celery_mcp.models.workers import MissingReason, MissingWorker
from celery_mcp.service.cluster import Cluster, Stamped

WORKER_TASKS_TTL_S = 5.0
ROLL_CALL_EVERY_S = 30.0
UNSEEN_GRACE_S = 0.010  # AMQP: how long replies are still taken after the expected ones
ANNOUNCED_WITHIN_S = 600.0  # worker events older than this do not make a worker expected


@dataclass(frozen=True)
class Census:
    """What a Redis broker knows about workers, without asking them."""

    registered: frozenset[str]  # hostnames with a mailbox binding (living or crashed)
    connected: int  # clients subscribed to the mailbox channel: workers that can answer

    @property
    def stale(self) -> bool:
        """True when some registered worker may not be connected (killed, crashed)."""
        return self.connected < len(self.registered)


@dataclass
class Replies:
    """Replies to one broadcast, by hostname, and who stayed silent."""

    by_worker: dict[str, Any]
    latency_ms: dict[str, float]
    missing: list[MissingWorker]
    timeout_s: float
    elapsed_ms: float = 0.0
    #: hostnames two or more workers answered as (only one of each is in `by_worker`)
    duplicates: list[str] = field(default_factory=list)


T = TypeVar("T")


def census(cluster: Cluster, connection: Any = None) -> Census | None:
    """Registered hostnames and connected count, or None when unknowable (see the module)."""
    if cluster.broker_is_amqp:
        return mailbox_census(cluster)
    if not cluster.broker_is_redis:
        return None
    exchange = cluster.app.control.mailbox.exchange.name
    suffix = f".{exchange}"
    with translate_errors("broker"), cluster.app.connection_or_acquire(connection) as conn:
        channel = conn.default_channel
        bindings = channel.get_table(exchange)
        with channel.conn_or_acquire() as client:
            connected = int(client.publish(channel._get_publish_topic(exchange, None), ""))
    names = {queue[: -len(suffix)] for _key, _pattern, queue in bindings if queue.endswith(suffix)}
    return Census(registered=frozenset(names), connected=connected)


def _announced(cluster: Cluster) -> tuple[set[str], set[str]]:
    """(online, offline) hostnames by the task history's recent worker events."""
    try:
        entries = cluster.history.workers()
    except Exception:  # no history (or unreachable): only this process's own sightings
        return set(), set()
    recent = time.time() - ANNOUNCED_WITHIN_S
    online = {h for h, e in entries.items() if e.status == "online" and e.ts >= recent}
    return online, {h for h, e in entries.items() if e.status == "offline"}


def mailbox_census(cluster: Cluster) -> Census | None:
    """AMQP: probe the mailbox queue of every worker seen or announced (None: none known)."""
    online, offline = _announced(cluster)
    candidates = (cluster.workers_seen | online) - offline
    if not candidates:
        return None
    namespace = cluster.app.control.mailbox.namespace
    alive: set[str] = set()
    gone: set[str] = set()
    with translate_errors("broker"), cluster.app.connection_for_read() as conn:
        for name in sorted(candidates):
            channel = conn.channel()
            try:
                declared = channel.queue_declare(f"{name}.{namespace}.pidbox", passive=True)
                (alive if declared.consumer_count else gone).add(name)
            except ResourceLocked:  # exclusive to the worker's own, open, connection
                alive.add(name)
            except NotFound:
                gone.add(name)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    # reported missing by this census, then forgotten (a clean stop: not even reported)
    cluster.workers_seen = cluster.workers_seen - gone - offline
    return Census(registered=frozenset(alive | gone), connected=len(alive))


def _roll_call_due(cluster: Cluster) -> bool:
    """AMQP: True (once) when no broadcast waited its whole timeout for ROLL_CALL_EVERY_S."""
    with cluster.lock:
        if time.monotonic() - cluster.last_roll_call < ROLL_CALL_EVERY_S:
            return False
        cluster.last_roll_call = time.monotonic()
        return True


def _roll_call(cluster: Cluster) -> None:
    """Ping everyone for the whole timeout, so workers nobody has seen become known."""
    with contextlib.suppress(Exception):
        timeout = cluster.settings.inspect_timeout_s
        replies, _, _ = _broadcast(cluster, "ping", None, None, timeout, None)
        cluster.workers_seen = cluster.workers_seen | replies.keys()


def expected_workers(cluster: Cluster) -> int | None:
    """How many workers can answer a broadcast now (Redis brokers), or None when unknowable."""
    found = census(cluster)
    return None if found is None else found.connected


def _missing(name: str, reason: MissingReason, timeout_s: float) -> MissingWorker:
    detail = {
        MissingReason.DISCONNECTED: "registered with the broker but not connected: the process "
        "is gone (killed or crashed without unregistering); restart it, or ignore the name if "
        "it is retired",
        MissingReason.NO_REPLY: f"did not answer within {timeout_s:g}s: busy, frozen, overloaded "
        "or gone; retry with a longer timeout_s or check the worker's host",
        MissingReason.UNKNOWN: "no worker with this hostname is registered with the broker; "
        "ping_workers lists the names",
    }[reason]
    return MissingWorker(hostname=name, reason=reason, detail=detail)


def _plan(
    cluster: Cluster,
    found: Census | None,
    destination: list[str] | None,
    timeout_s: float,
    *,
    alive: bool = False,
) -> tuple[list[str], int | None, list[MissingWorker]]:
    """(workers expected to answer, reply limit, workers known missing before asking)."""
    if alive and destination:
        return list(destination), len(destination), []
    if found is None:  # cannot count: expect the named workers, or every worker seen before
        expected = destination or sorted(cluster.workers_seen)
        return list(expected), len(destination) if destination else None, []
    if destination is None:
        return sorted(found.registered), found.connected, []
    unknown = [n for n in destination if n not in found.registered]
    expected = [n for n in destination if n in found.registered]
    missing = [_missing(n, MissingReason.UNKNOWN, timeout_s) for n in unknown]
    if found.stale and expected:
        # Someone registered is not connected: a quick roll call of everyone names the living.
        roll = request(cluster, "ping", timeout_s=timeout_s, census_=found)
        gone = [m for m in roll.missing if m.hostname in expected]
        missing += gone
        expected = [n for n in expected if n not in {m.hostname for m in gone}]
    return expected, len(expected), missing


def request(
    cluster: Cluster,
    command: str,
    *,
    arguments: dict[str, Any] | None = None,
    destination: list[str] | None = None,
    timeout_s: float | None = None,
    alive: bool = False,
    census_: Census | None = None,
) -> Replies:
    """Broadcast `command` to `destination` (default every worker) and collect the replies.

    Returns as soon as every worker that can answer has answered; waits `timeout_s` (default
    the inspect timeout) only when one stays silent, and reports it in `missing`. `alive=True`
    says the named workers just answered: wait for each of them without a census.
    """
    timeout = timeout_s or cluster.settings.inspect_timeout_s
    start = time.perf_counter()
    if destination is not None and not destination:  # nobody named: kombu would ask everyone
        return Replies(by_worker={}, latency_ms={}, missing=[], timeout_s=timeout)
    found = None if alive and destination else (census_ or census(cluster))
    expected, limit, missing = _plan(cluster, found, destination, timeout, alive=alive)
    replies: dict[str, Any] = {}
    latency: dict[str, float] = {}
    duplicates: list[str] = []
    if cluster.broker_is_amqp and destination is None:
        if limit is None:  # this call waits its whole timeout: it is the roll call
            cluster.last_roll_call = time.monotonic()
        elif _roll_call_due(cluster):  # this call is fast; a roll call in the background
            threading.Thread(target=_roll_call, args=(cluster,), daemon=True).start()
    # AMQP: the census knows only workers seen before; a new one gets a moment to answer too
    grace = UNSEEN_GRACE_S if cluster.broker_is_amqp and destination is None else 0.0
    if limit != 0:
        replies, latency, duplicates = _broadcast(
            cluster, command, arguments, destination, timeout, limit, grace
        )
    if replies.keys() - cluster.workers_seen:  # replaced whole: other threads may be reading it
        cluster.workers_seen = cluster.workers_seen | replies.keys()
    complete = found is not None and len(replies) >= (limit or 0)
    reason = MissingReason.DISCONNECTED if complete else MissingReason.NO_REPLY
    known = {m.hostname for m in missing}
    missing += [
        _missing(n, reason, timeout) for n in expected if n not in replies and n not in known
    ]
    return Replies(
        by_worker=dict(sorted(replies.items())),
        latency_ms=latency,
        missing=missing,
        timeout_s=timeout,
        elapsed_ms=round((time.perf_counter() - start) * 1e3, 2),
        duplicates=duplicates,
    )


def _broadcast(
    cluster: Cluster,
    command: str,
    arguments: dict[str, Any] | None,
    destination: list[str] | None,
    timeout_s: float,
    limit: int | None,
    grace_s: float = 0.0,
) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """(replies by hostname, latency by hostname, hostnames that replied more than once)."""
    start = time.perf_counter()
    latency: dict[str, float] = {}

    def arrived(body: dict[str, Any]) -> None:
        for name in body:
            latency.setdefault(name, round((time.perf_counter() - start) * 1e3, 2))

    with translate_errors("broker"):
        if grace_s and limit:
            replies = _broadcast_with_grace(
                cluster, command, arguments, timeout_s, limit, grace_s, arrived
            )
        else:
            with cluster.app.connection_or_acquire() as conn:
                replies = _mailbox(cluster, conn)._broadcast(
                    command,
                    arguments or {},
                    destination,
                    reply=True,
                    timeout=timeout_s,
                    limit=limit,
                    callback=arrived,
                    channel=conn.default_channel,
                )
    merged: dict[str, Any] = {}
    duplicates: set[str] = set()
    for item in replies or []:
        duplicates |= merged.keys() & item.keys()
        merged.update(item)
    return merged, latency, sorted(duplicates)


def _broadcast_with_grace(
    cluster: Cluster,
    command: str,
    arguments: dict[str, Any] | None,
    timeout_s: float,
    limit: int,
    grace_s: float,
    callback: Any,
) -> list[dict[str, Any]]:
    """`control.broadcast` to everyone that returns `grace_s` after the `limit`-th reply, not
    at it: a worker no census knew of (started a moment ago) answers as fast as the others.

    kombu's `_publish`/`_collect` are what `Mailbox._broadcast` runs; split here so the same
    ticket is collected twice (`_collect`'s timeout is per reply: it stops at a quiet gap)."""
    with cluster.app.connection_or_acquire() as conn:
        mailbox = _mailbox(cluster, conn)
        channel = conn.default_channel
        ticket = uuid()
        mailbox._publish(
            command,
            arguments or {},
            reply_ticket=ticket,
            channel=channel,
            timeout=timeout_s,
            serializer=mailbox.serializer,
        )
        replies: list[dict[str, Any]] = mailbox._collect(
            ticket, limit=limit, timeout=timeout_s, callback=callback, channel=channel
        )
        if len(replies) >= limit:
            replies += mailbox._collect(
                ticket, limit=None, timeout=grace_s, callback=callback, channel=channel
            )
        return replies


def cast(cluster: Cluster, command: str, arguments: dict[str, Any], destination: list[str]) -> None:
    """Send `command` to `destination` without waiting for replies (e.g. shutdown)."""
    with translate_errors("broker"), cluster.app.connection_or_acquire() as conn:
        _mailbox(cluster, conn)._broadcast(
            command, arguments, destination, reply=False, channel=conn.default_channel
        )


def _mailbox(cluster: Cluster, conn: Any) -> Any:
    """The control mailbox on `conn`, publishing on `conn`'s own channel.

    Celery's mailbox takes a producer from the app's producer pool, which takes a second
    connection from the pool this call already holds one of: with as many concurrent broadcasts
    as the pool has connections (`broker_pool_limit`, 10), each held one and waited for
    another, for ever (seen with 50 concurrent send_task calls re-asking the queue census)."""
    mailbox = cluster.app.control.mailbox(conn)
    mailbox.producer_pool = None
    return mailbox


def broadcast_inspect(
    cluster: Cluster,
    method: str,
    *,
    destination: list[str] | None = None,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """`inspect().<method>()` replies by hostname, returning as soon as all who can answer did."""
    return request(
        cluster, method, arguments=kwargs, destination=destination, timeout_s=timeout_s
    ).by_worker


def registered_names(replies: dict[str, Any]) -> dict[str, list[str]]:
    """hostname -> sorted task names, from `registered` replies.

    A worker lists a task whose rate limit is set (by the task or by `rate_limit`) as
    'name [rate_limit=10/s]': the suffix is dropped.
    """
    return {
        host: sorted({str(item).split(" [", 1)[0] for item in (names or [])})
        for host, names in replies.items()
    }


def worker_task_names(cluster: Cluster, *, max_age_s: float = WORKER_TASKS_TTL_S) -> frozenset[str]:
    """Task names registered on live workers (cached for `max_age_s`)."""

    def cached() -> frozenset[str] | None:
        stamped = cluster.worker_tasks
        return stamped.value if stamped is not None and stamped.fresh(max_age_s) else None

    def ask() -> frozenset[str]:
        now = time.monotonic()
        replies = registered_names(broadcast_inspect(cluster, "registered"))
        names = frozenset(name for tasks in replies.values() for name in tasks)
        cluster.worker_tasks = Stamped(now, names)
        return names

    return _shared(cluster, cached, ask, "the registered-tasks census")


def consumers_by_queue(replies: dict[str, Any]) -> dict[str, list[str]]:
    """queue name -> sorted hostnames, from `active_queues` replies."""
    consumers: dict[str, list[str]] = {}
    for host, queues in replies.items():
        for queue in queues or []:
            consumers.setdefault(str(queue.get("name")), []).append(host)
    return {name: sorted(hosts) for name, hosts in consumers.items()}


def recent_active_queues(cluster: Cluster, max_age_s: float) -> Replies | None:
    """The `active_queues` replies this process got within `max_age_s`, if any (no broadcast)."""
    cached = cluster.queue_census
    return cached.value if cached is not None and cached.fresh(max_age_s) else None


def active_queues(cluster: Cluster, *, max_age_s: float = WORKER_TASKS_TTL_S) -> Replies:
    """Every live worker's `active_queues` reply (cached for `max_age_s`)."""

    def ask() -> Replies:
        now = time.monotonic()
        replies = request(cluster, "active_queues")
        cluster.queue_census = Stamped(now, replies)
        return replies

    def cached() -> Replies | None:
        return recent_active_queues(cluster, max_age_s)

    return _shared(cluster, cached, ask, "the queue census")


def _shared(cluster: Cluster, cached: Callable[[], T | None], ask: Callable[[], T], what: str) -> T:
    """`cached()`, else `ask()` once for every call that found it stale at the same time: one
    census broadcast at a time per process, the others wait for it (bounded) and read it."""
    found = cached()
    if found is not None:
        return found
    bound_s = cluster.settings.inspect_timeout_s + 1.0
    if not cluster.census_lock.acquire(timeout=bound_s):
        raise WaitTimeout(f"{what} took more than {bound_s:.1f}s", hint="call health")
    try:
        found = cached()
        return found if found is not None else ask()
    finally:
        cluster.census_lock.release()


def queue_consumers(
    cluster: Cluster, *, max_age_s: float = WORKER_TASKS_TTL_S
) -> dict[str, list[str]]:
    """Which live workers consume each queue (cached for `max_age_s`)."""
    return consumers_by_queue(active_queues(cluster, max_age_s=max_age_s).by_worker)


def unconsumed_queue_warning(cluster: Cluster, queue: str) -> str | None:
    """A warning when no live worker consumes `queue` (checked again on a cached miss)."""
    if queue in queue_consumers(cluster) or queue in queue_consumers(cluster, max_age_s=0.5):
        return None
    return (
        f"no live worker consumes queue {queue!r}: the task waits there until one does; start "
        f"one with `celery-mcp worker -Q {queue}` (or `celery -A yourapp worker -Q {queue}`)"
    )


def known_task_names(cluster: Cluster) -> frozenset[str]:
    """Every task name the imported app or a live worker knows."""
    return cluster.app_task_names() | worker_task_names(cluster)


def is_known_task(cluster: Cluster, name: str) -> bool:
    """True when the app or a live worker knows `name` (worker list refreshed once on a miss)."""
    if name in cluster.app_task_names() or name in worker_task_names(cluster):
        return True
    return name in worker_task_names(cluster, max_age_s=0.5)


def unknown_task(cluster: Cluster, name: str) -> UnknownTask:
    """The error for a task name nobody registers, naming the closest known names."""
    known = sorted(n for n in known_task_names(cluster) if not n.startswith("celery."))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.75)
    if close:
        hint = f"did you mean {' or '.join(map(repr, close))}? list_task_types lists all"
    else:
        hint = f"list_task_types shows the {len(known)} known tasks (pattern filters by name)"
    return UnknownTask(
        f"unknown task {name!r}: no live worker and no imported app registers it", hint=hint
    )
