"""Periodic tasks over MCP with real `celery-mcp beat` processes, a real worker and Valkey.

Runs are counted on the worker side: `demo.flaky(key, 0)` INCRs a key per execution, and every
run has the deterministic task id `<entry>:<due time>`, so a run sent twice shows up as more
executions than distinct due times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from croniter import croniter
from mcp import ClientSession
from redbeat.schedulers import RedBeatSchedulerEntry

from celery_mcp.app import make_app
from celery_mcp.config import Settings
from celery_mcp.errors import Forbidden
from celery_mcp.models.schedules import (
    AddPeriodicTaskInput,
    EntryNameInput,
    ListPeriodicTasksInput,
    UpdatePeriodicTaskInput,
)
from celery_mcp.runtime.beat import Scheduler, configure
from celery_mcp.runtime.embedded import EmbeddedServer, ensure_running, resolve, stop
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.health import check_beat
from celery_mcp.service.schedules import (
    add_periodic_task,
    disable_periodic_task,
    enable_periodic_task,
    get_periodic_task,
    get_store,
    list_periodic_tasks,
    scored,
    update_periodic_task,
)
from celery_mcp.stores.schedules import Entry, Write, to_score
from tests.support import (
    Beat,
    Beats,
    Worker,
    call,
    call_error,
    executions,
    mcp_session,
    runs,
    wait_until,
)
from tests.toolset_contract import TOOLSET_TOOLS

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("remove_new_entries")]


@pytest.fixture(scope="module")
def beat(beats: Beats, cluster: Cluster) -> Beat:
    """One beat for the module, active."""
    return beats.start().wait_role(cluster, "active")


@pytest.fixture(scope="module")
async def smcp(env: dict[str, str], worker: Worker) -> AsyncIterator[ClientSession]:
    """An MCP session with the opt-in schedules toolset."""
    async with mcp_session(env, "--toolsets", "schedules,tasks") as session:
        yield session


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns() % 10**12}"


async def entry(session: ClientSession, name: str) -> dict[str, Any]:
    return await call(session, "get_periodic_task", name=name)


async def wait_runs(
    session: ClientSession, name: str, count: int, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await entry(session, name)
        if got["total_run_count"] >= count:
            return got
        assert time.monotonic() < deadline, f"{name}: {got['total_run_count']} of {count} runs"
        await anyio.sleep(0.2)


async def settled(session: ClientSession, cluster: Cluster, name: str) -> dict[str, Any]:
    """The disabled entry once the runs beat claimed before the disable were sent (no unsent
    run: a claim after the disable fails) and a worker finished each run it counted."""
    with anyio.fail_after(15):
        while True:
            got = await entry(session, name)
            if got["unsent_run"] is None and len(runs(cluster, name)) >= got["total_run_count"]:
                return got
            await anyio.sleep(0.05)


def ticked_after(cluster: Cluster, at: float) -> bool:
    """True once an active beat began a tick after `at` (unix time): a tick sends what it
    claims before the next one begins, so every run claimed before `at` is sent by then."""
    beats = get_store(cluster).heartbeats().values()
    return any(b.get("role") == "active" and b.get("last_tick_at", 0) > at for b in beats)


def finished(cluster: Cluster, task_ids: set[str]) -> bool:
    """True when a worker stored the result of each of `task_ids`."""
    client = cluster.app.backend.client
    return all(client.exists(f"celery-task-meta-{task_id}") for task_id in task_ids)


async def test_schedules_toolset_has_eight_tools(smcp: ClientSession) -> None:
    tools = {t.name: t for t in (await smcp.list_tools()).tools}
    names = TOOLSET_TOOLS["schedules"]
    assert len(names) == 8 and names <= set(tools)
    assert tools["remove_periodic_task"].annotations.destructive_hint is True
    assert tools["list_periodic_tasks"].annotations.read_only_hint is True
    props = tools["add_periodic_task"].input_schema["properties"]
    assert {"name", "task_name", "every", "crontab", "run_at"} <= set(props)


async def test_interval_entry_fires_on_time(
    smcp: ClientSession, beat: Beat, cluster: Cluster
) -> None:
    name, key = unique("every"), unique("k")
    added = await call(
        smcp, "add_periodic_task", name=name, task_name="demo.flaky", args=[key, 0], every=2
    )
    first_due = datetime.fromisoformat(added["next_run_at"])
    assert added["state"] == "scheduled" and added["total_run_count"] == 0
    got = await wait_runs(smcp, name, 3, timeout_s=20)
    wait_until(lambda: len(runs(cluster, name)) >= 3, 10, what="3 results")
    due = runs(cluster, name)
    assert abs((due[0] - first_due).total_seconds()) < 0.001
    assert [round((b - a).total_seconds(), 3) for a, b in zip(due, due[1:3], strict=False)] == [
        2.0,
        2.0,
    ]
    assert got["last_task_id"].startswith(f"{name}:") and got["last_fire_delay_ms"] < 1000
    result = await call(smcp, "get_result", task_id=got["last_task_id"], timeout_s=10)
    assert result["success"]
    await call(smcp, "disable_periodic_task", name=name)


async def test_crontab_next_run_matches_croniter(smcp: ClientSession) -> None:
    name = unique("cron")
    expr = "*/15 * * * 1-5"
    added = await call(smcp, "add_periodic_task", name=name, task_name="demo.noop", crontab=expr)
    created = datetime.fromisoformat(added["last_run_at"])
    expected = croniter(expr, created).get_next(datetime)
    assert datetime.fromisoformat(added["next_run_at"]) == expected
    assert added["schedule"]["crontab"] == expr and added["schedule"]["kind"] == "crontab"
    fields = {"minute": "30", "hour": "9", "day_of_week": "mon-fri"}
    other = await call(
        smcp, "add_periodic_task", name=unique("cronf"), task_name="demo.noop", crontab=fields
    )
    start = datetime.fromisoformat(other["last_run_at"])
    assert datetime.fromisoformat(other["next_run_at"]) == croniter("30 9 * * 1-5", start).get_next(
        datetime
    )


def test_crontab_is_read_in_the_configured_timezone(
    data_dir: Path, embedded: EmbeddedServer
) -> None:
    paris = Cluster(resolve(Settings(data_dir=data_dir, timezone="Europe/Paris")))
    name = unique("paris")
    added = add_periodic_task(
        paris, AddPeriodicTaskInput(name=name, task_name="demo.noop", crontab="30 9 * * *")
    )
    assert added.schedule.timezone == "Europe/Paris"
    start = added.last_run_at
    assert start is not None and added.next_run_at is not None
    expected = croniter("30 9 * * *", start.astimezone(ZoneInfo("Europe/Paris"))).get_next(datetime)
    assert added.next_run_at == expected
    assert added.next_run_at.astimezone(ZoneInfo("Europe/Paris")).hour == 9
    assert disable_periodic_task(paris, EntryNameInput(name=name)).enabled is False


async def test_invalid_schedules_are_refused_and_store_nothing(smcp: ClientSession) -> None:
    name = unique("bad")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"crontab": "61 * * * *"}, "minute='61'"),
        ({"crontab": "* * * *"}, "4 fields"),
        ({"crontab": {"hour": "25"}}, "hour='25'"),
        ({"crontab": "0 0 31 2 *"}, "never occurs"),
        ({"every": 0}, "every=0"),
        ({"every": -5}, "every=-5"),
        ({"every": {"seconds": 0}}, "0 s"),
        ({"run_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}, "in the past"),
        ({}, "exactly one of every, crontab, run_at"),
        ({"every": 5, "crontab": "* * * * *"}, "exactly one"),
    ]
    for schedule, expected in cases:
        text = await call_error(
            smcp, "add_periodic_task", name=name, task_name="demo.noop", **schedule
        )
        assert "invalid_argument" in text and expected in text, (schedule, text)
    text = await call_error(smcp, "add_periodic_task", name=name, task_name="demo.nope", every=5)
    assert "unknown_task" in text and "demo.nope" in text
    assert "not_found" in await call_error(smcp, "get_periodic_task", name=name)
    listed = await call(smcp, "list_periodic_tasks", limit=500)
    assert name not in {e["name"] for e in listed["entries"]}


async def test_add_refuses_an_existing_name(smcp: ClientSession) -> None:
    name = unique("dup-name")
    await call(smcp, "add_periodic_task", name=name, task_name="demo.noop", every=3600)
    text = await call_error(
        smcp, "add_periodic_task", name=name, task_name="demo.add", args=[1, 2], every=5
    )
    assert "already exists" in text and "update_periodic_task" in text
    assert (await entry(smcp, name))["task_name"] == "demo.noop"


async def test_list_filters_and_pages(smcp: ClientSession) -> None:
    tag = unique("lst")
    for i in range(5):
        await call(
            smcp,
            "add_periodic_task",
            name=f"{tag}-{i}",
            task_name="demo.add" if i % 2 else "demo.noop",
            args=[i, i] if i % 2 else [],
            every=3600,
            enabled=i != 4,
        )
    got = await call(smcp, "list_periodic_tasks", task_name="demo.add", limit=500)
    mine = [e["name"] for e in got["entries"] if e["name"].startswith(tag)]
    assert mine == [f"{tag}-1", f"{tag}-3"]
    disabled = await call(smcp, "list_periodic_tasks", enabled=False, limit=500)
    assert f"{tag}-4" in {e["name"] for e in disabled["entries"]}
    assert all(not e["enabled"] for e in disabled["entries"])
    page1 = await call(smcp, "list_periodic_tasks", limit=2)
    page2 = await call(smcp, "list_periodic_tasks", limit=2, offset=page1["next_offset"])
    assert page1["next_offset"] == 2 and page1["total"] >= 5
    assert [e["name"] for e in page1["entries"] + page2["entries"]] == sorted(
        e["name"] for e in page1["entries"] + page2["entries"]
    )


async def test_update_changes_schedule_and_args(smcp: ClientSession) -> None:
    name = unique("upd")
    await call(smcp, "add_periodic_task", name=name, task_name="demo.add", args=[1, 2], every=60)
    got = await call(smcp, "update_periodic_task", name=name, crontab="0 3 * * *", args=[5, 6])
    assert got["schedule"]["crontab"] == "0 3 * * *" and got["args"] == [5, 6]
    assert "schedule" in got["message"] and "args" in got["message"]
    start = datetime.fromisoformat(got["last_run_at"])
    assert datetime.fromisoformat(got["next_run_at"]) == croniter("0 3 * * *", start).get_next(
        datetime
    )
    text = await call_error(smcp, "update_periodic_task", name=name, crontab="0 25 * * *")
    assert "hour='25'" in text
    assert (await entry(smcp, name))["schedule"]["crontab"] == "0 3 * * *"


async def test_disable_stops_and_remove_deletes(
    smcp: ClientSession, beat: Beat, beats: Beats, cluster: Cluster
) -> None:
    name, key = unique("stop"), unique("k")
    await call(smcp, "add_periodic_task", name=name, task_name="demo.flaky", args=[key, 0], every=1)
    await wait_runs(smcp, name, 2, timeout_s=15)
    off = await call(smcp, "disable_periodic_task", name=name)
    assert off["enabled"] is False and off["state"] == "disabled" and off["next_run_at"] is None
    with anyio.fail_after(10):  # a run claimed before the disable is still sent (ms)
        while (stopped := await entry(smcp, name))["unsent_run"] is not None:
            await anyio.sleep(0.05)
    count = stopped["total_run_count"]
    await anyio.sleep(3)
    assert (await entry(smcp, name))["total_run_count"] == count
    on = await call(smcp, "enable_periodic_task", name=name)
    assert on["state"] == "scheduled"
    await wait_runs(smcp, name, count + 1, timeout_s=10)

    dry = await call(smcp, "remove_periodic_task", name=name)
    assert dry["executed"] is False and "confirm=true" in dry["message"]
    assert (await entry(smcp, name))["name"] == name
    done = await call(smcp, "remove_periodic_task", name=name, confirm=True)
    removed_at = time.time()
    assert done["executed"] is True
    assert "not_found" in await call_error(smcp, "get_periodic_task", name=name)
    store = get_store(cluster)
    assert not store.client.exists(store.key(name))
    assert store.client.zscore(store.schedule_key, store.key(name)) is None
    # a run claimed before the removal is still sent, by the next tick; it may be executing
    wait_until(lambda: ticked_after(cluster, removed_at), 10, what="a beat tick after removal")
    sent = {task_id for b in beats.all for task_id, _, _ in b.sent_runs(name)}
    wait_until(lambda: finished(cluster, sent), 10, what="the runs sent before the removal")
    before = executions(cluster, key)
    next_due = time.time() + 1  # every=1: a due time passes, and beat ticks after it
    wait_until(lambda: ticked_after(cluster, next_due), 10, what="a beat tick after a due time")
    assert {task_id for b in beats.all for task_id, _, _ in b.sent_runs(name)} == sent
    assert executions(cluster, key) == before


async def test_one_off_runs_once_then_finishes(
    smcp: ClientSession, beat: Beat, cluster: Cluster
) -> None:
    name, key = unique("once"), unique("k")
    at = datetime.now(UTC) + timedelta(seconds=3)
    added = await call(
        smcp,
        "add_periodic_task",
        name=name,
        task_name="demo.flaky",
        args=[key, 0],
        run_at=at.isoformat(),
    )
    assert added["schedule"]["kind"] == "once"
    got = await wait_runs(smcp, name, 1, timeout_s=15)
    assert got["state"] == "finished" and got["enabled"] is False and got["next_run_at"] is None
    wait_until(lambda: executions(cluster, key) == 1, 10, what="one execution")
    await anyio.sleep(2)
    assert executions(cluster, key) == 1
    assert (await entry(smcp, name))["total_run_count"] == 1
    text = await call_error(smcp, "enable_periodic_task", name=name)
    assert "already ran" in text
    again = datetime.now(UTC) + timedelta(seconds=2)
    revived = await call(smcp, "update_periodic_task", name=name, run_at=again.isoformat())
    assert revived["state"] == "scheduled" and revived["enabled"] is True
    await wait_runs(smcp, name, 2, timeout_s=15)
    wait_until(lambda: executions(cluster, key) == 2, 10, what="a second execution")


async def test_run_now_sends_once_without_touching_the_schedule(smcp: ClientSession) -> None:
    name = unique("now")
    await call(
        smcp, "add_periodic_task", name=name, task_name="demo.add", args=[20, 22], every=3600
    )
    before = await entry(smcp, name)
    sent = await call(smcp, "run_periodic_task_now", name=name)
    result = await call(smcp, "get_result", task_id=sent["task_id"], timeout_s=10)
    assert result["success"] and result["result"] == 42
    after = await entry(smcp, name)
    assert after["next_run_at"] == before["next_run_at"] and after["total_run_count"] == 0


async def test_health_reports_beat_and_store(smcp: ClientSession, beat: Beat) -> None:
    health = await call(smcp, "health", include_workers=False)
    assert health["beat"]["ok"] is True and "active, last tick" in health["beat"]["detail"]
    assert health["schedule_store"]["ok"] is True
    assert "periodic task(s)" in health["schedule_store"]["detail"]


def test_health_flags_a_beat_in_another_timezone(
    beat: Beat, data_dir: Path, embedded: EmbeddedServer
) -> None:
    paris = Cluster(resolve(Settings(data_dir=data_dir, timezone="Europe/Paris")))
    got = check_beat(paris)
    assert got.ok is False and "CELERY_MCP_TIMEZONE" in got.detail and "UTC" in got.detail


def test_entries_survive_embedded_server_restart(tmp_path: Path) -> None:
    data = tmp_path / "own-valkey"
    ensure_running(data)
    try:
        cluster = Cluster(resolve(Settings(data_dir=data)))
        for name, spec in (
            ("keep-every", {"every": 30}),
            ("keep-cron", {"crontab": "0 9 * * 1-5"}),
        ):
            add_periodic_task(
                cluster, AddPeriodicTaskInput(name=name, task_name="demo.noop", **spec)
            )
        disable_periodic_task(cluster, EntryNameInput(name="keep-cron"))
        before = list_periodic_tasks(cluster, ListPeriodicTasksInput())
        stop(data)
        ensure_running(data)
        after = list_periodic_tasks(
            Cluster(resolve(Settings(data_dir=data))), ListPeriodicTasksInput()
        )
        assert after == before and after.total == 2
        got = get_periodic_task(
            Cluster(resolve(Settings(data_dir=data))), EntryNameInput(name="keep-cron")
        )
        assert got.enabled is False and got.schedule.crontab == "0 9 * * 1-5"
    finally:
        stop(data)


async def test_beat_restart_neither_loses_nor_double_fires(
    smcp: ClientSession, beat: Beat, beats: Beats, cluster: Cluster
) -> None:
    name, key = unique("restart"), unique("k")
    quiet = unique("yearly")
    await call(smcp, "add_periodic_task", name=name, task_name="demo.flaky", args=[key, 0], every=2)
    await call(smcp, "add_periodic_task", name=quiet, task_name="demo.noop", crontab="0 0 1 1 *")
    await wait_runs(smcp, name, 2, timeout_s=15)
    beat.stop()
    stopped = await entry(smcp, name)
    await anyio.sleep(4.5)  # two due times pass with no beat
    assert (await entry(smcp, name))["total_run_count"] == stopped["total_run_count"]
    fresh = beats.start().wait_role(cluster, "active")
    got = await wait_runs(smcp, name, stopped["total_run_count"] + 2, timeout_s=15)
    assert got["name"] == name and got["schedule"]["every_s"] == 2
    assert (await entry(smcp, quiet))["total_run_count"] == 0  # no fire-at-start (RedBeat #79)
    await call(smcp, "disable_periodic_task", name=name)
    await settled(smcp, cluster, name)
    due = runs(cluster, name)
    assert executions(cluster, key) == len(due)  # no run executed twice
    gaps = [(b - a).total_seconds() for a, b in zip(due, due[1:], strict=False)]
    assert min(gaps) >= 1.999, gaps  # the missed runs were sent once, not replayed
    fresh.stop()


async def test_two_beats_never_fire_a_run_twice(
    smcp: ClientSession, beats: Beats, cluster: Cluster
) -> None:
    beats.stop_all()  # start from no beat
    first = beats.start().wait_role(cluster, "active")
    second = beats.start().wait_role(cluster, "standby")
    name, key = unique("two-beats"), unique("k")
    await call(smcp, "add_periodic_task", name=name, task_name="demo.flaky", args=[key, 0], every=1)
    await wait_runs(smcp, name, 8, timeout_s=30)
    first.stop()  # hand over to the standby, and start a new standby
    second.wait_role(cluster, "active", timeout_s=10)
    third = beats.start().wait_role(cluster, "standby")
    await wait_runs(smcp, name, 17, timeout_s=30)  # the chaos test runs 100 (schedule_delivery)
    await call(smcp, "disable_periodic_task", name=name)
    got = await settled(smcp, cluster, name)
    due = runs(cluster, name)
    assert executions(cluster, key) == len(due) >= 15, (executions(cluster, key), len(due))
    gaps = [(b - a).total_seconds() for a, b in zip(due, due[1:], strict=False)]
    assert min(gaps) >= 0.999, gaps

    def delays() -> list[float]:  # a run is counted just before its "sent" line is logged
        return [ms for b in (first, second, third) for ms in b.sent_delays_ms(name)]

    wait_until(lambda: len(delays()) >= got["total_run_count"], 5, what="the sent log lines")
    assert len(delays()) == got["total_run_count"]
    sent = delays()
    print(
        f"\nfire delay after due time over {len(sent)} runs (ms): "
        f"median {statistics.median(sent):.0f}, max {max(sent):.0f}, "
        f"p90 {sorted(sent)[int(len(sent) * 0.9)]:.0f}; largest gap {max(gaps):.2f}s"
    )
    assert statistics.median(sent) < 1000
    second.stop()
    third.stop()


def test_a_change_made_between_read_and_write_is_kept_not_reverted(
    cluster: Cluster, settings: Settings
) -> None:
    """Every write reads the entry inside its WATCH: a disable made by another client while an
    update was being prepared survives the update (it used to be reverted)."""
    name = unique("race")
    add_periodic_task(
        cluster, AddPeriodicTaskInput(name=name, task_name="demo.add", args=[1, 2], every=60)
    )
    other = Cluster(settings)  # another process's connection
    calls = 0

    def change(stored: Entry | None) -> Write:
        nonlocal calls
        calls += 1
        if calls == 1:  # between this write's read and its commit, someone disables it
            disable_periodic_task(other, EntryNameInput(name=name))
        assert stored is not None
        stored.definition["args"] = [3, 4]
        return scored(stored)

    cluster.schedules.update(name, change)
    got = get_periodic_task(cluster, EntryNameInput(name=name))
    assert calls == 2 and got.enabled is False and got.args == [3, 4]
    updated = update_periodic_task(cluster, UpdatePeriodicTaskInput(name=name, args=[5, 6]))
    assert updated.enabled is False and updated.args == [5, 6]  # the service's update merges too


def test_two_schedulers_claim_one_due_run_once(cluster: Cluster, settings: Settings) -> None:
    """The per-run compare-and-set: two beats that both loaded a due entry send it once."""
    app = make_app(settings, worker=True)
    app.conf.redbeat_key_prefix = "claim-test:"  # a store no running beat reads
    configure(app, settings, 1.0)
    first, second = Scheduler(app=app, lazy=True), Scheduler(app=app, lazy=True)
    own = Cluster(settings, app=make_app(settings))
    own.app.conf.redbeat_key_prefix = "claim-test:"
    name = unique("cas")
    add_periodic_task(own, AddPeriodicTaskInput(name=name, task_name="demo.noop", every=1))
    key = get_store(own).key(name)
    assert key.startswith("claim-test:")
    try:
        due = get_periodic_task(own, EntryNameInput(name=name)).next_run_at
        assert due is not None
        wait_until(lambda: datetime.now(UTC) >= due, 5, 0.02, "the entry is due")
        loaded = [RedBeatSchedulerEntry.from_key(key, app=app) for _ in range(2)]
        claims = [first.claim(loaded[0], fire=True), second.claim(loaded[1], fire=True)]
        assert claims[0] is not None and claims[1] is None
        run = claims[0][0]
        assert run is not None
        got = get_periodic_task(own, EntryNameInput(name=name))
        # claimed, not yet published: not counted, and kept to be sent
        assert got.total_run_count == 0 and got.last_task_id is None
        assert got.unsent_run is not None and got.unsent_run.task_id == run.task_id
    finally:
        disable_periodic_task(own, EntryNameInput(name=name))
        first.close()
        second.close()


def test_a_claimed_run_stays_due_through_tool_writes_until_a_leader_sends_it(
    cluster: Cluster, settings: Settings
) -> None:
    """A run claimed by a beat that then stopped keeps its entry due whoever writes it, and the
    next scheduler to read it sends it under the claimed id (attempt 2) and counts it once."""
    app = make_app(settings, worker=True)
    app.conf.redbeat_key_prefix = "pending-test:"  # a store no running beat reads
    configure(app, settings, 1.0)
    dead, leader = Scheduler(app=app, lazy=True), Scheduler(app=app, lazy=True)
    own = Cluster(settings, app=make_app(settings))
    own.app.conf.redbeat_key_prefix = "pending-test:"
    name = unique("pending")
    add_periodic_task(own, AddPeriodicTaskInput(name=name, task_name="demo.noop", every=1))
    store = get_store(own)
    try:
        due = get_periodic_task(own, EntryNameInput(name=name)).next_run_at
        assert due is not None
        wait_until(lambda: datetime.now(UTC) >= due, 5, 0.02, "the entry is due")
        claimed = dead.claim(RedBeatSchedulerEntry.from_key(store.key(name), app=app), fire=True)
        assert claimed is not None and claimed[0] is not None
        run = claimed[0]
        update_periodic_task(own, UpdatePeriodicTaskInput(name=name, every=3600))
        assert store.client.zscore(store.schedule_key, store.key(name)) == to_score(run.due_at)
        pending = get_periodic_task(own, EntryNameInput(name=name))
        assert pending.unsent_run is not None and pending.unsent_run.task_id == run.task_id
        assert pending.total_run_count == 0
        loaded = leader.schedule[name]
        leader.maybe_due(loaded)
        got = get_periodic_task(own, EntryNameInput(name=name))
        assert got.unsent_run is None and got.total_run_count == 1
        assert got.last_task_id == run.task_id and got.last_send_attempts == 2
        leader.maybe_due(leader.schedule.get(name, loaded))  # nothing more is due: no send
        assert get_periodic_task(own, EntryNameInput(name=name)).total_run_count == 1
    finally:
        disable_periodic_task(own, EntryNameInput(name=name))
        dead.close()
        leader.close()


STOCK_BEAT = (
    "from celery_mcp.config import Settings\n"
    "from celery_mcp.app import make_app\n"
    "from celery_mcp.runtime.beat import configure\n"
    "from celery_mcp.runtime.embedded import resolve\n"
    "settings = resolve(Settings())\n"
    "app = make_app(settings, worker=True)\n"
    "configure(app, settings, 1.0)\n"
    "app.set_current()\n"
    "app.Beat(scheduler='redbeat.RedBeatScheduler', max_interval=1, loglevel='INFO').run()\n"
)


async def test_stock_redbeat_scheduler_runs_the_same_entries(
    smcp: ClientSession, beats: Beats, cluster: Cluster
) -> None:
    name, key = unique("stock"), unique("k")
    quiet = unique("stock-yearly")
    await call(smcp, "add_periodic_task", name=name, task_name="demo.flaky", args=[key, 0], every=1)
    await call(smcp, "add_periodic_task", name=quiet, task_name="demo.noop", crontab="0 0 1 1 *")
    beats.stop_all()  # only the stock beat runs
    stock = beats.start(["-c", STOCK_BEAT])
    try:
        got = await wait_runs(smcp, name, 3, timeout_s=30)
        assert got["last_task_id"] is None  # stock RedBeat does not record our run info
        wait_until(lambda: executions(cluster, key) >= 3, 10, what="3 executions")
        assert (await entry(smcp, quiet))["total_run_count"] == 0  # no fire-at-start
    finally:
        stock.stop()
        await call(smcp, "disable_periodic_task", name=name)


async def test_health_reports_a_missing_beat(smcp: ClientSession, beats: Beats) -> None:
    beats.stop_all()
    await call(smcp, "add_periodic_task", name=unique("orphan"), task_name="demo.noop", every=60)
    health = await call(smcp, "health", include_workers=False)
    assert health["beat"]["ok"] is False and "celery-mcp beat" in health["beat"]["detail"]


def test_allowlist_holds_for_every_write_enable_and_each_beat_send(
    cluster: Cluster, settings: Settings
) -> None:
    """An entry stored before the allowlist was set can be neither enabled nor rescheduled
    under it, and beat passes over its due runs (kept visible, not counted) instead of sending."""
    app = make_app(settings, worker=True)
    app.conf.redbeat_key_prefix = "allow-test:"  # a store no running beat reads
    configure(app, settings, 1.0)
    own = Cluster(settings, app=make_app(settings))
    own.app.conf.redbeat_key_prefix = "allow-test:"
    strict_settings = settings.model_copy(update={"task_allow": ("demo.add",)})
    strict = Cluster(strict_settings, app=own.app)
    off, on = unique("off"), unique("on")
    add_periodic_task(own, AddPeriodicTaskInput(name=off, task_name="demo.fail", every=1))
    add_periodic_task(own, AddPeriodicTaskInput(name=on, task_name="demo.fail", every=1))
    disable_periodic_task(own, EntryNameInput(name=off))
    with pytest.raises(Forbidden):
        enable_periodic_task(strict, EntryNameInput(name=off))
    with pytest.raises(Forbidden):
        update_periodic_task(strict, UpdatePeriodicTaskInput(name=on, every=2))
    assert get_periodic_task(own, EntryNameInput(name=off)).enabled is False
    scheduler = Scheduler(app=app, lazy=True)
    scheduler.cluster = strict
    try:
        due = get_periodic_task(own, EntryNameInput(name=on)).next_run_at
        assert due is not None
        wait_until(lambda: datetime.now(UTC) >= due, 5, 0.02, "the entry is due")
        scheduler.maybe_due(RedBeatSchedulerEntry.from_key(get_store(own).key(on), app=app))
        got = get_periodic_task(own, EntryNameInput(name=on))
        assert got.total_run_count == 0 and got.last_task_id is None
        assert got.last_refusal is not None and "allowlist" in got.last_refusal
        assert got.next_run_at is not None and got.next_run_at > due  # passed over, not stuck
    finally:
        disable_periodic_task(own, EntryNameInput(name=on))
        scheduler.close()
