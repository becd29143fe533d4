"""A run's delivery across refused publishes and beat crashes: every due run is sent once, late,
or reported missed, and counted only once published.

Real `celery-mcp beat` processes, the session's worker and Valkey. Runs are counted on the
worker side: `demo.flaky(key, 0)` INCRs a key per execution, and each run has the task id
`<entry>:<due time>`, so a run executed twice shows as more executions than results.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from celery_mcp.models.diagnose import DiagnoseInput
from celery_mcp.models.history import GetTaskInput
from celery_mcp.models.schedules import AddPeriodicTaskInput, EntryNameInput, PeriodicTask
from celery_mcp.runtime.beat import (
    TEST_CLAIM_PAUSE_ENV,
    TEST_REFUSE_PUBLISHES_ENV,
    TEST_SENT_PAUSE_ENV,
)
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.diagnose import diagnose
from celery_mcp.service.history import get_task
from celery_mcp.service.schedules import add_periodic_task, disable_periodic_task, get_periodic_task
from tests.support import (
    Beat,
    Beats,
    executions,
    runs,
    started_monitor,
    started_workers,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("remove_new_entries", "worker")]

BEAT = ["-m", "celery_mcp", "beat", "-l", "INFO"]
CHAOS_RUNS = 100


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() % 10**12}"


def add(cluster: Cluster, name: str, key: str, every: float, queue: str | None = None) -> datetime:
    """Add `demo.flaky(key, 0)` every `every` seconds; return its first due time."""
    added = add_periodic_task(
        cluster,
        AddPeriodicTaskInput(
            name=name, task_name="demo.flaky", args=[key, 0], every=every, queue=queue
        ),
    )
    assert added.next_run_at is not None
    return added.next_run_at


def detail(cluster: Cluster, name: str) -> PeriodicTask:
    return get_periodic_task(cluster, EntryNameInput(name=name))


def settle(cluster: Cluster, name: str, *, finished: bool = True) -> PeriodicTask:
    """Disable `name`, wait until no run of it is pending (and, `finished`, until every run
    sent has a result)."""
    disable_periodic_task(cluster, EntryNameInput(name=name))
    wait_until(lambda: detail(cluster, name).unsent_run is None, 30, 0.1, "no unsent run")
    got = detail(cluster, name)
    if finished:
        wait_until(lambda: len(runs(cluster, name)) >= got.total_run_count, 30, 0.1, "every result")
    return got


def to_ms(dt: datetime) -> datetime:
    """`dt` in UTC to the millisecond, as run task ids name due times."""
    return dt.astimezone(UTC).replace(microsecond=dt.microsecond // 1000 * 1000)


def missed_due_times(task: PeriodicTask, every_s: float) -> list[datetime]:
    step = timedelta(seconds=every_s)
    return [to_ms(m.due_at + i * step) for m in task.missed_runs for i in range(m.runs)]


def grid(first: datetime, last: datetime, every_s: float) -> list[datetime]:
    count = round((last - first).total_seconds() / every_s) + 1
    return [to_ms(first + timedelta(seconds=i * every_s)) for i in range(count)]


def test_refused_publishes_are_sent_late_or_reported_missed_never_counted(
    cluster: Cluster, beats: Beats
) -> None:
    beats.stop_all()
    # each failed attempt takes >= 0.9 s (0.4 s of publish retries + a 0.5 s tick), so the
    # first run gets at most 4 attempts before its 3 s deadline: it is always missed
    refusing = beats.env | {TEST_REFUSE_PUBLISHES_ENV: "6"}
    beat = beats.start([*BEAT, "--max-interval", "0.5"], env=refusing)
    beat.wait_role(cluster, "active")
    name, key, every = unique("refused"), unique("k"), 3.0
    first = add(cluster, name, key, every)
    wait_until(
        lambda: beat.text().count("could not send") >= 6 and len(beat.sent_runs(name)) >= 2,
        60,
        0.2,
        "6 refused publishes, then 2 runs sent",
    )
    got = settle(cluster, name)
    beat.stop()
    executed, missed = runs(cluster, name), missed_due_times(got, every)
    # every due run, in order, was published once or reported missed (never both)
    assert sorted(executed + missed) == grid(first, max(executed + missed), every)
    assert executions(cluster, key) == len(executed) == got.total_run_count
    assert got.missed_run_count == len(missed)
    failures = [line for line in beat.text().splitlines() if "could not send" in line]
    assert len(failures) == 6 and all("Connection refused" in line for line in failures)
    assert missed and all("Connection refused" in m.reason for m in got.missed_runs)
    assert all(m.task_id and m.task_id.startswith(f"{name}:") for m in got.missed_runs)
    found = diagnose(cluster, DiagnoseInput()).findings
    assert any(f.check == "schedule_runs_missed" and f.evidence["name"] == name for f in found)
    resent = [(tid, attempt) for tid, _, attempt in beat.sent_runs(name) if attempt > 1]
    print(f"\nrefused publishes: {len(missed)} run(s) missed, re-sent late: {resent}")


def test_a_beat_killed_after_its_claim_is_followed_by_a_leader_that_sends_the_run_once(
    cluster: Cluster, beats: Beats
) -> None:
    beats.stop_all()
    first = beats.start(env=beats.env | {TEST_CLAIM_PAUSE_ENV: "120"})
    first.wait_role(cluster, "active")
    second = beats.start().wait_role(cluster, "standby")
    name, key = unique("killed"), unique("k")
    add(cluster, name, key, 15)
    wait_until(lambda: "test hook: claimed" in first.text(), 30, 0.05, "the claim")
    claimed = detail(cluster, name).unsent_run
    assert claimed is not None and detail(cluster, name).total_run_count == 0
    first.kill()  # between the claim and the publish
    second.wait_role(cluster, "active", timeout_s=15)
    wait_until(lambda: executions(cluster, key) >= 1, 20, 0.1, "the run executed")
    got = settle(cluster, name)
    assert runs(cluster, name) == [to_ms(claimed.due_at)] and executions(cluster, key) == 1
    assert got.total_run_count == 1 and got.last_task_id == claimed.task_id
    assert got.last_send_attempts == 2 and got.missed_run_count == 0
    assert [(t, a) for t, _, a in second.sent_runs(name)] == [(claimed.task_id, 2)]
    second.stop()


def test_a_beat_killed_between_its_publish_and_the_record_leaves_a_detectable_copy(
    cluster: Cluster, beats: Beats, data_dir: Path
) -> None:
    """The one edge: the run went out, its beat died before recording it, and no worker has
    stored a state for it yet (its queue has no consumer), so the next leader cannot tell and
    sends it again. Both copies carry the run's task id: the entry says 2 attempts and the
    history 2 deliveries of that id."""
    beats.stop_all()
    name, key, queue = unique("twice"), unique("k"), unique("later")
    with started_monitor(beats.env, data_dir):
        first = beats.start(env=beats.env | {TEST_SENT_PAUSE_ENV: "120"})
        first.wait_role(cluster, "active")
        second = beats.start().wait_role(cluster, "standby")
        due = add(cluster, name, key, 15, queue=queue)
        wait_until(lambda: "test hook: published" in first.text(), 30, 0.05, "the publish")
        first.kill()  # between the publish and the record
        second.wait_role(cluster, "active", timeout_s=15)
        wait_until(lambda: second.sent_runs(name), 20, 0.1, "the re-send")
        got = settle(cluster, name, finished=False)
        assert got.total_run_count == 1 and got.last_send_attempts == 2
        task_id = str(got.last_task_id)
        spec = {"hostname": f"{queue}@%h", "queues": queue, "concurrency": 1}
        with started_workers(beats.env, data_dir, spec):
            wait_until(lambda: executions(cluster, key) == 2, 30, 0.1, "both copies ran")
            wait_until(
                lambda: get_task(cluster, GetTaskInput(task_id=task_id)).deliveries == 2,
                30,
                0.1,
                "two deliveries of one task id in the history",
            )
    assert runs(cluster, name) == [to_ms(due)] and task_id.startswith(f"{name}:")


@dataclass
class Chaos:
    """What a chaos run did and what came of it."""

    seed: int
    kills: int
    due: list[datetime]
    executed: list[datetime]
    missed: list[datetime]
    lost: list[datetime]
    doubled: int  # executions beyond one per run
    resent: int  # runs published on a second or later attempt (after a crash)
    delays_ms: list[float]  # per run, its first publish after its due time

    def note(self) -> str:
        return (
            f"chaos (seed {self.seed}): {len(self.due)} runs due, {self.kills} beats "
            f"SIGKILLed; {len(self.executed)} executed, {len(self.missed)} missed, "
            f"{len(self.lost)} lost, {self.doubled} executed twice, {self.resent} re-sent "
            f"after a crash; delay after due time (ms): median "
            f"{statistics.median(self.delays_ms):.0f}, max {max(self.delays_ms):.0f}"
        )


def chaos(cluster: Cluster, beats: Beats, env: Mapping[str, str] | None = None) -> Chaos:
    """Three beats, a 1 s entry, a random beat SIGKILLed and restarted every 2-4 s, until
    CHAOS_RUNS runs were due (`env`: the beats' environment)."""
    beats.stop_all()
    argv = [*BEAT, "--max-interval", "0.1", "--lock-timeout", "0.5"]
    alive: list[Beat] = [beats.start(argv, env) for _ in range(3)]

    def roles() -> list[str]:
        return sorted(str(b.role(cluster)) for b in alive)

    wait_until(lambda: roles() == ["active", "standby", "standby"], 60, 0.1, "1 active beat")
    seed = time.time_ns()
    rng = random.Random(seed)
    name, key = unique("chaos"), unique("k")
    first = add(cluster, name, key, 1)
    kills = 0
    give_up = time.monotonic() + CHAOS_RUNS + 90
    while True:
        got = detail(cluster, name)
        if got.total_run_count + got.missed_run_count >= CHAOS_RUNS:
            break
        assert time.monotonic() < give_up, f"only {got.total_run_count} runs (seed {seed})"
        time.sleep(rng.uniform(2, 4))
        victim = rng.randrange(len(alive))
        alive[victim].kill()
        alive[victim] = beats.start(argv, env)
        kills += 1
    got = settle(cluster, name)
    executed, missed = runs(cluster, name), missed_due_times(got, 1)
    due = grid(first, max(executed + missed), 1)
    sent = [run for b in beats.all for run in b.sent_runs(name)]
    first_ms: dict[str, float] = {}
    for task_id, ms, _ in sent:
        first_ms[task_id] = min(ms, first_ms.get(task_id, ms))
    assert got.total_run_count == len(executed)
    return Chaos(
        seed=seed,
        kills=kills,
        due=due,
        executed=executed,
        missed=missed,
        lost=sorted(set(due) - set(executed) - set(missed)),
        doubled=executions(cluster, key) - len(executed),
        resent=sum(1 for _, _, attempt in sent if attempt > 1),
        delays_ms=list(first_ms.values()),
    )


@pytest.mark.timeout(300)  # about 110 s: CHAOS_RUNS one-second runs, plus start-up
def test_chaos_beats_killed_at_random_neither_lose_nor_double_a_run(
    cluster: Cluster, beats: Beats
) -> None:
    """A 0.5 s lock timeout makes a standby take over within a run's one-interval deadline."""
    got = chaos(cluster, beats)
    print("\n" + got.note())
    assert not got.lost and not got.missed and got.doubled == 0, got.note()
    assert len(got.executed) == len(got.due) >= CHAOS_RUNS
