"""Diagnose: one call that returns what is wrong, ranked, with evidence and the next tool call.

Each check reads what is cheap and bounded: a census and one roll call of the workers
(`discovery.request`), queue depths on the broker (`workers.queue_depths`), the recorded
history (`stores.history`), the beat health check and the schedule store, and the broker's
INFO. A check that cannot run says why in `checks`, and the
others still run.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery_mcp.app import visibility_timeout_s
from celery_mcp.errors import CeleryMcpError, translate_errors
from celery_mcp.models.common import Json
from celery_mcp.models.diagnose import DiagnoseInput, DiagnoseResult, Finding, Severity
from celery_mcp.service import discovery
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.health import check_beat as beat_health
from celery_mcp.service.policy import offers
from celery_mcp.service.redis_layout import layout
from celery_mcp.service.registry import OPERATIONS
from celery_mcp.service.workers import queue_depths
from celery_mcp.stores.history import HistoryStore

SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
DEFAULT_STUCK_S = 600.0
MIN_STUCK_S = 5.0
MIN_SAMPLES = 5
RUNTIME_SAMPLES = 200
FAILURE_SAMPLES = 100
MAX_FINDINGS_PER_CHECK = 10
SCAN_KEYS_MAX = 10_000
UNACKED_MAX = 1_000
OVERDUE_GRACE_S = 60.0
INTERNAL_EXCHANGES = ("celeryev", "celery.pidbox", "reply.celery.pidbox")


@dataclass
class Run:
    """One diagnose call: its inputs, and the findings and check outcomes so far."""

    cluster: Cluster
    request: DiagnoseInput
    now: float = field(default_factory=time.time)
    findings: list[tuple[float, Finding]] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)

    def add(
        self,
        check: str,
        severity: Severity,
        summary: str,
        evidence: dict[str, Json],
        weight: float = 0.0,
        next_tool: str | None = None,
        **arguments: Json,
    ) -> None:
        """Record a finding; `weight` orders findings of one severity (larger first)."""
        op = OPERATIONS.get(next_tool or "")
        # only a tool an agent of this server can call (the MCP server's policy)
        known = op is not None and offers(self.cluster.settings, op.toolset, op.read_only, "mcp")
        self.findings.append(
            (
                weight,
                Finding(
                    check=check,
                    severity=severity,
                    summary=summary,
                    evidence=evidence,
                    next_tool=next_tool if known else None,
                    next_arguments=arguments if known else {},
                ),
            )
        )


RECENT_TASKS_FOR_QUEUES = 1_000  # AMQP: queues of this many newest tasks are checked


def p95(values: list[float]) -> float | None:
    """95th percentile of `values` (None with fewer than MIN_SAMPLES)."""
    if len(values) < MIN_SAMPLES:
        return None
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def stuck_threshold(request: DiagnoseInput, runtimes: list[float]) -> tuple[float, str]:
    """(seconds, how it was chosen) after which a running task counts as stuck."""
    if request.stuck_after_s is not None:
        return request.stuck_after_s, "stuck_after_s"
    high = p95(runtimes)
    if high is None:
        return DEFAULT_STUCK_S, f"default {DEFAULT_STUCK_S:g}s (no runtime history)"
    limit = max(MIN_STUCK_S, request.stuck_multiple * high)
    return limit, f"{request.stuck_multiple:g} x p95 runtime {high:.3f}s"


def exception_type(text: Any) -> str:
    """'RuntimeError' from "RuntimeError('boom')" or 'RuntimeError: boom'."""
    match = re.match(r"\s*([A-Za-z_][\w.]*)", str(text or ""))
    return match.group(1) if match else "unknown"


def rank(findings: list[tuple[float, Finding]]) -> list[Finding]:
    """Most severe first; within a severity, the heaviest first."""
    ordered = sorted(findings, key=lambda wf: (SEVERITY_RANK[wf[1].severity], -wf[0]))
    return [f for _, f in ordered]


# --- checks ----------------------------------------------------------------------------------


def _history(run: Run) -> HistoryStore:
    with translate_errors("broker"):
        return run.cluster.history


def check_broker_settings(run: Run) -> str:
    """Eviction policy other than noeviction, or no persistence, puts messages at risk."""
    if not run.cluster.broker_is_redis:
        return "skipped: not a Redis/Valkey broker"
    client = run.cluster.broker_redis
    with translate_errors("broker"):
        memory = client.info("memory")
        persistence = client.info("persistence")
        try:
            save = str(client.config_get("save").get("save", ""))
        except Exception:  # CONFIG is often disabled on managed Redis
            save = None
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    maxmemory = int(memory.get("maxmemory", 0) or 0)
    found = 0
    if policy != "noeviction":
        severity: Severity = "critical" if maxmemory else "warning"
        run.add(
            "broker_eviction_policy",
            severity,
            f"broker maxmemory-policy is {policy}: under memory pressure Redis deletes queued "
            "messages and results; set maxmemory-policy noeviction",
            {"maxmemory_policy": policy, "maxmemory_bytes": maxmemory},
            weight=1,
        )
        found += 1
    aof = bool(int(persistence.get("aof_enabled", 0) or 0))
    if not aof and save == "":
        run.add(
            "broker_no_persistence",
            "warning",
            "broker has no persistence (appendonly no, no save points): a restart loses every "
            "queued message; enable appendonly yes",
            {"aof_enabled": False, "save": save},
        )
        found += 1
    return f"found {found}" if found else f"ok (policy {policy}, aof {aof}, save {save!r})"


def check_workers(run: Run) -> str:
    """Workers that are gone or stopped heartbeating, and tasks running far longer than usual."""
    roll = discovery.request(run.cluster, "active")
    lost: dict[str, dict[str, Json]] = {}
    for miss in roll.missing:
        lost[miss.hostname] = {"reason": str(miss.reason), "detail": miss.detail}
    try:  # heartbeats are fresh only while a monitor records them
        store = _history(run)
        with translate_errors("broker"):
            beats = store.workers() if store.status()["recording"] else {}
    except CeleryMcpError:
        beats = {}
    for host, entry in beats.items():
        silent_s = run.now - entry.ts
        limit = max(3 * entry.freq, 6.0)
        if entry.status == "online" and silent_s > limit and host not in roll.by_worker:
            lost.setdefault(host, {})["last_heartbeat_s_ago"] = round(silent_s, 1)
    for host, evidence in sorted(lost.items()):
        gone = evidence.get("reason") == "disconnected" or "last_heartbeat_s_ago" in evidence
        run.add(
            "worker_lost" if gone else "worker_not_answering",
            "critical" if gone else "warning",
            f"worker {host} "
            + (
                "stopped heartbeating / is gone: its running tasks are lost or will be "
                "redelivered after the visibility timeout"
                if gone
                else "did not answer: busy, frozen or overloaded"
            ),
            {"worker": host, **evidence},
            weight=1,
            next_tool="list_tasks",
            worker=host,
            status=["STARTED", "RECEIVED"],
        )
    if not roll.by_worker and not lost:
        run.add(
            "no_workers",
            "critical",
            "no worker is running: nothing consumes any queue and sent tasks wait; start one "
            "with `celery-mcp worker` (or your app's `celery worker`)",
            {"workers_answering": 0},
            weight=1,
            next_tool="health",
        )
    stuck = _stuck_tasks(run, roll.by_worker)
    running = sum(len(t or []) for t in roll.by_worker.values())
    return (
        f"{len(roll.by_worker)} worker(s) answered, {len(lost)} lost, "
        f"{running} running, {stuck} stuck"
    )


def _runtimes(run: Run, names: set[str]) -> dict[str, list[float]]:
    """Recent successful runtimes per task name, from the history."""
    if not names:
        return {}
    try:
        store = _history(run)
        with translate_errors("broker"):
            return {
                name: [
                    r.runtime for r in store.newest("SUCCESS", name, RUNTIME_SAMPLES) if r.runtime
                ]
                for name in names
            }
    except CeleryMcpError:
        return {}


def _stuck_tasks(run: Run, active: dict[str, Any]) -> int:
    tasks = [(host, t) for host, ts in active.items() for t in (ts or [])]
    history = _runtimes(run, {str(t.get("name")) for _, t in tasks})
    found = 0
    for host, task in tasks:
        started = task.get("time_start")
        if not started:
            continue
        running_s = run.now - float(started)
        name = str(task.get("name"))
        limit, why = stuck_threshold(run.request, history.get(name, []))
        if running_s <= limit:
            continue
        found += 1
        if found > MAX_FINDINGS_PER_CHECK:
            continue
        run.add(
            "stuck_task",
            "warning",
            f"task {name} {task.get('id')} has run {running_s:.0f}s on {host}, over its "
            f"threshold of {limit:g}s; revoke it with terminate=true if it hangs",
            {
                "task_id": task.get("id"),
                "task_name": name,
                "worker": host,
                "running_s": round(running_s, 1),
                "threshold_s": round(limit, 3),
                "threshold_from": why,
            },
            weight=running_s / limit,
            next_tool="get_task",
            task_id=str(task.get("id")),
        )
    return found


def queue_names(cluster: Cluster) -> set[str]:
    """Every queue the broker has a binding for (Redis), internal exchanges excluded; other
    brokers cannot list queues: the app's queues and those recent tasks went to."""
    if not cluster.broker_is_redis:
        return _known_queue_names(cluster)
    names: set[str] = set()
    client = cluster.broker_redis
    lay = layout(cluster)
    sep = lay.sep.encode()
    deadline = time.monotonic() + cluster.settings.inspect_timeout_s
    with translate_errors("broker"):
        keys: list[bytes] = []
        cursor = 0
        while True:  # bounded: a huge keyspace is cut at the deadline
            cursor, found = client.scan(cursor, match=lay.binding_pattern(), count=5_000)
            for key in found:
                if lay.exchange_of(key.decode()) not in INTERNAL_EXCHANGES:
                    keys.append(key)
            if not cursor or len(keys) >= SCAN_KEYS_MAX or time.monotonic() > deadline:
                break
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.smembers(key)
        for members in pipe.execute():
            for member in members:
                queue = member.split(sep)[-1].decode()
                if queue and not queue.endswith(".pidbox"):
                    names.add(queue)
    return names


def _known_queue_names(cluster: Cluster) -> set[str]:
    names = {str(name) for name in cluster.app.amqp.queues}
    with contextlib.suppress(Exception):  # no history: the app's own queues only
        names |= cluster.history.recent_queues(RECENT_TASKS_FOR_QUEUES)
    return {n for n in names if not n.endswith(".pidbox")}


def _message_eta(raw: Any) -> tuple[str | None, datetime | None]:
    """(task id, eta) of a raw kombu message (JSON), when it has them."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # unacked entries: [message, exchange, routing_key]
            message = message[0]
        headers = message.get("headers") or {}
        eta = headers.get("eta")
        return headers.get("id"), datetime.fromisoformat(eta) if eta else None
    except (ValueError, TypeError, AttributeError, IndexError):
        return None, None


def check_queues(run: Run) -> str:
    """Queues with messages and no consumer; messages waiting long; ETAs past visibility."""
    cluster = run.cluster
    roll = discovery.request(cluster, "active_queues")
    consumers = discovery.consumers_by_queue(roll.by_worker)
    names = queue_names(cluster) | set(consumers) | {str(cluster.app.conf.task_default_queue)}
    depths = queue_depths(cluster, sorted(names))
    orphaned = 0
    busy = []
    for name, depth in depths.items():
        messages = depth.messages or 0
        if not messages:
            continue
        busy.append(name)
        if not consumers.get(name) and not depth.consumer_count:
            orphaned += 1
            evidence: dict[str, Json] = {
                "queue": name,
                "messages": messages,
                "workers_answering": len(roll.by_worker),
            }
            if not roll.by_worker:  # nobody to add a consumer to
                run.add(
                    "queue_without_consumer",
                    "critical",
                    f"queue {name} holds {messages} message(s) and no worker is running; start "
                    f"one with `celery-mcp worker -Q {name}` (or your app's `celery worker`)",
                    evidence,
                    weight=messages,
                    next_tool="health",
                )
                continue
            run.add(
                "queue_without_consumer",
                "critical",
                f"queue {name} holds {messages} message(s) and no worker consumes it; start a "
                f"worker with -Q {name} or add a consumer",
                evidence,
                weight=messages,
                next_tool="control_workers",
                command="add_consumer",
                queue=name,
            )
    waiting = _waiting(run, busy) if cluster.broker_is_redis else 0
    late = _eta_beyond_visibility(run, busy) if cluster.broker_is_redis else 0
    return (
        f"{len(depths)} queue(s), {len(busy)} non-empty, {orphaned} without consumer, "
        f"{waiting} waiting too long, {late} ETA past visibility timeout"
    )


def _waiting(run: Run, queues: list[str]) -> int:
    """Queues whose oldest message (history's sent time) waited over max_wait_s."""
    client = run.cluster.broker_redis
    lay = layout(run.cluster)
    with translate_errors("broker"):
        pipe = client.pipeline(transaction=False)
        for q in queues:
            for key in lay.queue_keys(q).values():
                pipe.lindex(key, -1)
        heads = pipe.execute()
    oldest: dict[str, str] = {}
    per = len(lay.priority_steps)
    for i, q in enumerate(queues):
        for raw in heads[i * per : (i + 1) * per]:
            tid, _ = _message_eta(raw) if raw else (None, None)
            if tid:
                oldest.setdefault(q, tid)
    if not oldest:
        return 0
    try:
        recs = _history(run).get_many(list(oldest.values()))
    except CeleryMcpError:
        return 0
    found = 0
    for (q, tid), rec in zip(oldest.items(), recs, strict=True):
        if not rec:
            continue
        waited = run.now - (rec.sent or rec.first)
        if waited > run.request.max_wait_s:
            found += 1
            run.add(
                "message_waiting",
                "warning",
                f"the oldest message in queue {q} has waited {waited:.0f}s "
                f"(over {run.request.max_wait_s:g}s): workers are too few or too slow",
                {"queue": q, "task_id": tid, "waited_s": round(waited, 1)},
                weight=waited,
                next_tool="queue_lengths",
                queues=[q],
            )
    return found


def _eta_beyond_visibility(run: Run, queues: list[str]) -> int:
    """Messages (held by workers, or queued) whose ETA is further away than the visibility
    timeout: Redis redelivers them every timeout, so they run more than once."""
    client = run.cluster.broker_redis
    vt = visibility_timeout_s(run.cluster.app)
    lay = layout(run.cluster)
    raws: list[Any] = []
    with translate_errors("broker"):
        for i, (_tag, raw) in enumerate(client.hscan_iter(lay.unacked, count=500)):
            if i >= UNACKED_MAX:
                break
            raws.append(raw)
        pipe = client.pipeline(transaction=False)
        for q in queues:
            for key in lay.queue_keys(q).values():
                pipe.lrange(key, -100, -1)
        for chunk in pipe.execute():
            raws.extend(chunk)
    found = 0
    for raw in raws:
        tid, eta = _message_eta(raw)
        if eta is None:
            continue
        if eta.tzinfo is None:  # Celery writes UTC
            eta = eta.replace(tzinfo=UTC)
        ahead = eta.timestamp() - run.now
        if ahead <= vt:
            continue
        found += 1
        if found <= MAX_FINDINGS_PER_CHECK:
            run.add(
                "eta_beyond_visibility_timeout",
                "warning",
                f"task {tid} has an ETA {ahead:.0f}s away, beyond the Redis visibility timeout "
                f"({vt:.0f}s): it will be redelivered and may run more than once; use beat "
                "or a shorter countdown, or raise visibility_timeout",
                {"task_id": tid, "eta": eta.isoformat(), "visibility_timeout_s": vt},
                weight=ahead,
                next_tool="get_task",
                task_id=str(tid),
            )
    return found


def check_failures(run: Run) -> str:
    """Failure rate and top exceptions per task name in the window (from the history)."""
    store = _history(run)
    lo = run.now - run.request.window_s
    with translate_errors("broker"):
        keys = store.name_keys()
        counts = store.count_each([k for k, _, _ in keys], lo)
        totals: dict[str, Counter[str]] = {}
        for (_, state, name), n in zip(keys, counts, strict=True):
            totals.setdefault(name, Counter())[state] += n
        failing = sorted(
            ((c["FAILURE"], name, c) for name, c in totals.items() if c["FAILURE"]), reverse=True
        )
        for failures, name, c in failing[:MAX_FINDINGS_PER_CHECK]:
            finished = c["FAILURE"] + c["SUCCESS"]
            rate = failures / finished if finished else 1.0
            recs = store.newest("FAILURE", name, FAILURE_SAMPLES, since=lo)
            top = Counter(exception_type(r.exception) for r in recs).most_common(3)
            example = next((str(r.exception)[:200] for r in recs), None)
            severity: Severity = "warning" if rate >= 0.2 and failures >= 3 else "info"
            run.add(
                "task_failures",
                severity,
                f"{name} failed {failures} time(s) in the last {run.request.window_s:g}s "
                f"({rate:.0%} of finished runs); top exception {top[0][0] if top else '?'}",
                {
                    "task_name": name,
                    "failures": failures,
                    "succeeded": c["SUCCESS"],
                    "failure_rate": round(rate, 3),
                    "top_exceptions": [{"type": t, "count": n} for t, n in top],
                    "example": example,
                },
                weight=failures * rate,
                next_tool="list_tasks",
                status=["FAILURE"],
                task_name=name,
                within_s=run.request.window_s,
            )
    with translate_errors("broker"):
        status = store.status()
    if not status["recording"]:
        run.add(
            "history_not_recorded",
            "info",
            "no celery-mcp monitor is recording task history: failure rates and runtimes "
            "cover only what was recorded; start `celery-mcp monitor`",
            {"tasks_kept": status["tasks"]},
        )
    return f"{len(failing)} task name(s) with failures in the window"


def check_beat(run: Run) -> str:
    """Beat not running while schedules exist, and periodic tasks overdue."""
    beat = beat_health(run.cluster)
    found = 0
    if beat.ok is False:
        found += 1
        run.add(
            "beat_not_running",
            "warning",
            f"beat: {beat.detail}",
            {"detail": beat.detail},
            next_tool="list_periodic_tasks",
        )
    with translate_errors("broker"):
        overdue = run.cluster.schedules.overdue(run.now - OVERDUE_GRACE_S, limit=20)
    if overdue:
        found += 1
        late = {name: round(run.now - due, 1) for name, due in overdue.items()}
        run.add(
            "schedules_overdue",
            "warning" if beat.ok is not False else "info",
            f"{len(late)} periodic task(s) overdue by more than {OVERDUE_GRACE_S:g}s: beat is "
            "not ticking or is overloaded",
            {"overdue_s": dict(late), "beat": beat.detail},
            weight=max(late.values()),
            next_tool="list_periodic_tasks",
        )
    found += _missed_runs(run)
    return f"found {found}" if found else f"ok ({beat.detail})"


def _missed_runs(run: Run) -> int:
    """Periodic tasks with runs missed in the window, or a run claimed and still unsent."""
    with translate_errors("broker"):
        entries = run.cluster.schedules.read_all()
    since = run.now - run.request.window_s
    found = 0
    for entry in entries:
        log = entry.run
        recent = [m for m in log.missed if m.recorded_at.timestamp() >= since]
        stuck = log.pending if log.pending is not None and log.pending.error else None
        if not recent and stuck is None:
            continue
        found += 1
        if found > MAX_FINDINGS_PER_CHECK:
            continue
        missed = sum(m.runs for m in recent)
        parts = [f"{missed} run(s) missed in the last {run.request.window_s:g}s"] if recent else []
        why = recent[-1].reason if recent else ""
        if stuck is not None:
            parts.append(f"run {stuck.task_id} not sent yet")
            why = why or f"its last publish failed: {stuck.error}"
        run.add(
            "schedule_runs_missed" if recent else "schedule_run_unsent",
            "warning",
            f"periodic task {entry.name}: {' and '.join(parts)} ({why})",
            {
                "name": entry.name,
                "missed_runs": missed,
                "missed_due_at": [m.due_at.isoformat() for m in recent],
                "reason": why,
                "unsent_task_id": stuck.task_id if stuck else None,
                "unsent_deadline": stuck.deadline.isoformat() if stuck else None,
            },
            weight=missed + (stuck is not None),
            next_tool="get_periodic_task",
            name=entry.name,
        )
    return found


CHECKS: dict[str, Callable[[Run], str]] = {
    "broker_settings": check_broker_settings,
    "workers": check_workers,
    "queues": check_queues,
    "failures": check_failures,
    "beat": check_beat,
}


def _run_check(check: Callable[[Run], str], run: Run) -> str:
    try:
        return check(run)
    except CeleryMcpError as exc:
        return f"skipped: {exc}"
    except ImportError as exc:
        return f"skipped: {exc}"


def diagnose(cluster: Cluster, request: DiagnoseInput) -> DiagnoseResult:
    """Every check at once, findings ranked by severity."""
    start = time.perf_counter()
    run = Run(cluster, request)
    # Each check is bounded and independent: run at once, on their own Run (findings merged in
    # CHECKS order, so the ranking is the same), they take the longest one's time, not the
    # sum (a frozen broker: 2 s instead of 6 s).
    parts = {name: Run(cluster, request, now=run.now) for name in CHECKS}
    with ThreadPoolExecutor(len(CHECKS)) as pool:
        futures = {
            name: pool.submit(_run_check, check, parts[name]) for name, check in CHECKS.items()
        }
        for name, future in futures.items():
            run.checks[name] = future.result()
            run.findings += parts[name].findings
    findings = rank(run.findings)
    return DiagnoseResult(
        ok=not any(f.severity in ("critical", "warning") for f in findings),
        findings=findings,
        checks=run.checks,
        elapsed_ms=round((time.perf_counter() - start) * 1e3, 2),
    )
