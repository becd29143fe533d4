"""CelerySkill against the embedded Valkey: its own in-process worker and a real prefork worker.

The module's facade runs a local worker (threads pool, in this process) on the default queue
and its own queue; a `celery-mcp worker` process on the queue `facade.prefork` covers what only
prefork can do (terminate, pool_restart) and one on `facade.stop` is shut down.
"""

from __future__ import annotations

import inspect as pyinspect
import json
import socket
import threading
import time
import types
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab as celery_crontab

from celery_mcp import CelerySkill
from celery_mcp.errors import (
    BrokerUnavailable,
    Forbidden,
    InvalidArgument,
    TaskFailed,
    Unavailable,
    UnknownTask,
    WaitTimeout,
)
from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service.registry import OPERATIONS
from tests.support import Worker, wait_until

HOST = socket.gethostname()
PREFORK_QUEUE = "facade.prefork"


def multiply(x: int, y: int) -> int:
    """Multiply two integers (registered under facade.multiply)."""
    return x * y


def boom(message: str) -> None:
    raise ValueError(message)


def test_context_manager_stops_its_worker(data_dir: Path, embedded: EmbeddedServer) -> None:
    # runs before the module's facade starts its own local worker (one per process)
    with CelerySkill(data_dir=data_dir) as skill:
        hostname = skill.start_worker(hostname=f"ctx@{HOST}")
        assert skill.start_worker() == hostname  # idempotent
        names = skill.worker_manager().ping_workers([hostname])["active_workers"]
        assert [w["hostname"] for w in names] == [hostname]
        threads = [t for t in threading.enumerate() if hostname in t.name]
        assert threads
    wait_until(lambda: not any(t.is_alive() for t in threads), 10, what="worker thread exit")
    with CelerySkill(data_dir=data_dir) as other:
        missing = other.worker_manager().ping_workers([hostname], timeout_s=1)
        assert missing["active_workers"] == []


@pytest.fixture(scope="module")
def skill(data_dir: Path, embedded: EmbeddedServer) -> Iterator[CelerySkill]:
    with CelerySkill(data_dir=data_dir) as s:
        s.register_task(multiply, "facade.multiply")
        s.register_task(boom, "facade.boom")
        s.register_task(lambda results: {"collected": results}, "facade.collect")
        s.start_worker(hostname=f"skill@{HOST}")
        yield s


@pytest.fixture(scope="module")
def prefork(env: dict[str, str], data_dir: Path, embedded: EmbeddedServer) -> Iterator[Worker]:
    w = Worker(env, "fp@%h", queues=PREFORK_QUEUE, concurrency=1, log_dir=data_dir).wait_ready()
    yield w
    w.stop()


def prefork_name() -> str:
    return f"fp@{HOST}"


# -- the seed's examples ----------------------------------------------------------------------


def test_registered_function_runs_by_name_on_the_started_worker(skill: CelerySkill) -> None:
    tasks = skill.task_manager()
    sent = tasks.send_task("facade.multiply", args=[6, 7])
    assert sent["task_id"] and sent["status"] == "PENDING"
    result = tasks.get_result(sent["task_id"], timeout=10)
    assert result["success"] and result["ready"] and result["status"] == "SUCCESS"
    assert result["result"] == 42 and result["error"] is None
    status = tasks.get_status(sent["task_id"])
    assert status["worker"] == f"skill@{HOST}" and status["task_name"] == "facade.multiply"


def test_chord_callback_receives_the_list_of_results(skill: CelerySkill) -> None:
    flow = skill.workflow().chord_workflow(
        [("facade.multiply", [2, 3]), ("facade.multiply", [4, 5]), ("demo.add", [1, 1])],
        "facade.collect",
    )
    assert flow.id and flow.kind == "chord"
    assert flow.get(timeout=15) == {"collected": [6, 20, 2]}  # the callback's result
    assert flow.ready() and flow.successful() and flow.status == "SUCCESS"
    assert flow.result == {"collected": [6, 20, 2]}
    assert [r.get() for r in flow.results] == [6, 20, 2]  # a handle per header task
    assert all(r.status == "SUCCESS" and r.ready() for r in flow.results)


def test_lambda_registered_under_a_dotted_name(skill: CelerySkill) -> None:
    offset = 100
    skill.register_task(lambda x: x + offset, "facade.plus_offset")  # after start_worker
    tasks = skill.task_manager()
    sent = tasks.send_task("facade.plus_offset", args=[1])
    assert tasks.get_result(sent["task_id"], timeout=10)["result"] == 101


# -- tasks ------------------------------------------------------------------------------------


def test_failed_task_reports_error(skill: CelerySkill) -> None:
    tasks = skill.task_manager()
    sent = tasks.send_task("facade.boom", kwargs={"message": "bad input"})
    result = tasks.get_result(sent["task_id"], timeout=10)
    assert result["status"] == "FAILURE" and not result["success"]
    assert result["error"] == "ValueError: bad input" and "ValueError" in result["traceback"]


def test_get_result_times_out_with_state(skill: CelerySkill) -> None:
    tasks = skill.task_manager()
    sent = tasks.send_task("demo.sleep", args=[2], countdown=0)
    result = tasks.get_result(sent["task_id"], timeout=0.2)
    assert result["timed_out"] and not result["ready"]
    assert tasks.get_result(sent["task_id"], timeout=15)["result"] == 2


def test_bad_arguments_raise_typed_errors(skill: CelerySkill) -> None:
    tasks = skill.task_manager()
    with pytest.raises(UnknownTask, match="facade.nope"):
        tasks.send_task("facade.nope")
    with pytest.raises(InvalidArgument, match="priority"):
        tasks.send_task("demo.add", args=[1, 2], priority=10)
    with pytest.raises(InvalidArgument, match="colour"):
        tasks.send_task("demo.add", args=[1, 2], colour="red")
    with pytest.raises(InvalidArgument):
        skill.register_task(multiply, "not a name")


def test_revoke_queued_task(skill: CelerySkill) -> None:
    tasks = skill.task_manager()
    sent = tasks.send_task("demo.noop", countdown=3)
    revoked = tasks.revoke(sent["task_id"])
    assert revoked["executed"] and revoked["status_before"] == "PENDING"
    assert tasks.get_result(sent["task_id"], timeout=15)["status"] == "REVOKED"


def test_revoke_terminate_kills_running_task_on_prefork(
    skill: CelerySkill, prefork: Worker
) -> None:
    tasks = skill.task_manager()
    sent = tasks.send_task("demo.sleep", args=[60], queue=PREFORK_QUEUE)
    tid = sent["task_id"]
    wait_until(lambda: tasks.get_status(tid)["status"] == "STARTED", 20, 0.1, "task started")
    dry = tasks.revoke(tid, terminate=True, signal="SIGKILL", confirm=False)
    assert not dry["executed"] and tasks.get_status(tid)["status"] == "STARTED"
    done = tasks.revoke(tid, terminate=True, signal="SIGKILL")  # in Python the call confirms
    assert done["executed"] and done["status_before"] == "STARTED"
    assert tasks.get_result(tid, timeout=15)["status"] == "REVOKED"


def test_catalog_lists_and_describes_tasks(skill: CelerySkill) -> None:
    tasks = skill.task_manager()
    listed = tasks.list_task_types("facade.*")
    names = {t["name"] for t in listed["tasks"]}
    assert {"facade.multiply", "facade.boom", "facade.collect"} <= names
    described = tasks.describe_task("demo.add")
    assert [p["name"] for p in described["parameters"]] == ["x", "y"]
    with pytest.raises(UnknownTask):
        tasks.describe_task("facade.nope")


# -- health and workers -----------------------------------------------------------------------


def test_health_check_sees_the_local_worker(skill: CelerySkill) -> None:
    health = skill.health_check()
    assert health["ok"] and health["embedded"] and health["broker"]["ok"]
    assert f"skill@{HOST}" in health["worker_names"]
    assert "***" in health["broker_url"]


def test_diagnose_reports_ranked_findings(skill: CelerySkill) -> None:
    queue = f"facade.orphan.{time.time_ns()}"
    skill.task_manager().send_task("demo.noop", queue=queue)
    report = skill.diagnose(window_s=600)
    assert report["checks"] and isinstance(report["findings"], list)
    orphan = [f for f in report["findings"] if queue in json.dumps(f)]
    assert orphan and orphan[0]["next_tool"], report["findings"]
    skill.worker_manager().purge_queue(queue, confirm=True)


def test_inspect_and_ping_workers(skill: CelerySkill, prefork: Worker) -> None:
    workers = skill.worker_manager()
    names = {f"skill@{HOST}", prefork_name()}
    info = workers.inspect_workers(sorted(names))
    by_name = {w["hostname"]: w for w in info["workers"]}
    assert set(by_name) == names and not info["missing"]
    local = by_name[f"skill@{HOST}"]
    assert "facade.multiply" in local["registered"] and skill.local_queue in local["queues"]
    assert by_name[prefork_name()]["queues"] == [PREFORK_QUEUE]
    assert "active_count" in local and "pool" in local["stats"]
    pinged = workers.ping_workers(sorted(names))
    assert {w["hostname"] for w in pinged["active_workers"]} == names


def test_registered_and_active_tasks(skill: CelerySkill, prefork: Worker) -> None:
    workers = skill.worker_manager()
    registered = workers.get_registered_tasks([f"skill@{HOST}"])
    assert "facade.multiply" in registered["tasks"]
    tasks = skill.task_manager()
    tid = tasks.send_task("demo.sleep", args=[3], queue=PREFORK_QUEUE)["task_id"]

    def running() -> bool:
        active = workers.get_active_tasks([prefork_name()])
        return any(t["id"] == tid and t["worker"] == prefork_name() for t in active["tasks"])

    wait_until(running, 20, 0.2, "task listed as active")
    assert tasks.get_result(tid, timeout=15)["success"]


def test_pool_restart_dry_run_then_confirmed(skill: CelerySkill, prefork: Worker) -> None:
    workers = skill.worker_manager()
    dry = workers.pool_restart([prefork_name()], confirm=False)
    assert not dry["executed"] and dry["command"] == "pool_restart"
    done = workers.pool_restart([prefork_name()], timeout_s=5)
    assert done["executed"] and done["ok"] == 1, done
    tid = skill.task_manager().send_task("demo.add", args=[1, 2], queue=PREFORK_QUEUE)["task_id"]
    assert skill.task_manager().get_result(tid, timeout=20)["result"] == 3


def test_shutdown_workers_stops_only_the_destination(
    skill: CelerySkill, env: dict[str, str], data_dir: Path
) -> None:
    target = Worker(env, "fs@%h", queues="facade.stop", concurrency=1, log_dir=data_dir)
    try:
        target.wait_ready()
        workers = skill.worker_manager()
        dry = workers.shutdown_workers([f"fs@{HOST}"], confirm=False)
        assert not dry["executed"] and target.proc.poll() is None
        done = workers.shutdown_workers([f"fs@{HOST}"], wait_s=20)
        assert done["executed"] and done["targets"] == [f"fs@{HOST}"]
        target.proc.wait(30)
        assert skill.health_check()["ok"]  # the local worker still answers
    finally:
        target.stop()


def test_queue_lengths_and_purge(skill: CelerySkill) -> None:
    workers = skill.worker_manager()
    queue = f"facade.idle.{time.time_ns()}"
    tasks = skill.task_manager()
    for _ in range(3):
        tasks.send_task("demo.noop", queue=queue)
    depth = workers.queue_lengths([queue])
    assert depth["queues"][0]["messages"] == 3
    assert not workers.purge_queue(queue, confirm=False)["executed"]
    assert workers.purge_queue(queue)["removed"] == 3


def test_control_workers_rate_limit(skill: CelerySkill) -> None:
    reply = skill.worker_manager().control_workers(
        "rate_limit", [f"skill@{HOST}"], task_name="facade.multiply", rate="100/s"
    )
    assert reply["executed"] and reply["ok"] == 1


# -- workflows --------------------------------------------------------------------------------


def test_chain_passes_results_along(skill: CelerySkill) -> None:
    flow = skill.workflow().chain_tasks(
        [("facade.multiply", [2, 3]), {"task_name": "facade.multiply", "args": [10]}]
    )
    assert flow.kind == "chain"
    assert flow.get(timeout=15) == 60
    assert [r.get() for r in flow.results] == [6, 60]
    seed_spelling = skill.workflow().chain_tasks(
        ("facade.multiply", (2, 3)), ("facade.multiply", (10,))
    )
    assert seed_spelling.get(timeout=15) == 60  # steps one by one, args as tuples


def test_registered_steps_reach_the_local_worker_from_another_worker(
    skill: CelerySkill, prefork: Worker
) -> None:
    # the prefork worker (which lacks facade.*) sends the next step and the chord callback
    on_prefork = {"queue": PREFORK_QUEUE}
    chain = skill.workflow().chain_tasks(
        [{"task_name": "demo.add", "args": [1, 2], **on_prefork}, ("facade.multiply", [5])]
    )
    assert chain.get(timeout=20) == 15
    chord = skill.workflow().chord_workflow(
        [{"task_name": "demo.add", "args": [i, i], **on_prefork} for i in range(3)],
        "facade.collect",
    )
    assert chord.get(timeout=20) == {"collected": [0, 2, 4]}
    tasks = skill.task_manager()
    assert tasks.get_status(str(chord.id))["queue"] == skill.local_queue
    assert tasks.get_status(str(chain.id))["queue"] == skill.local_queue


def test_failed_chain_step_is_reported(skill: CelerySkill) -> None:
    flow = skill.workflow().chain_tasks(
        [("facade.boom", ["first"]), {"task_name": "facade.multiply", "args": [2]}]
    )
    with pytest.raises(TaskFailed, match="first"):
        flow.get(timeout=15)
    tree = flow.tree()
    assert tree["status"] == "FAILURE" and tree["failed_at"] == 0 and flow.failed()
    assert "first" in tree["error"] and flow.get(timeout=1, propagate=False) == tree["error"]
    first, second = flow.results
    with pytest.raises(TaskFailed, match="ValueError: first"):
        first.get()


def test_group_and_map(skill: CelerySkill) -> None:
    flows = skill.workflow()
    group = flows.group_tasks([("facade.multiply", [2, 2]), ("demo.add", [3, 4])])
    assert group.get(timeout=15) == [4, 7]
    assert [r.get() for r in group.results] == [4, 7]
    mapped = flows.map_task("facade.multiply", [(1, 2), (3, 4), (5, 6)], chord_callback="demo.xsum")
    assert mapped.get(timeout=15) == 2 + 12 + 30
    chunked = flows.map_task("demo.add", [[1, 1], [2, 2], [3, 3]], chunk_size=2)
    assert chunked.get(timeout=15) == [[2, 4], [6]]
    assert [r.get() for r in chunked.results] == [[2, 4], [6]]
    tree = flows.get_workflow(str(chunked.id))
    assert tree["ready"] and tree["total"] >= 2


def test_workflow_dry_run_and_bad_steps(skill: CelerySkill) -> None:
    flows = skill.workflow()
    dry = flows.group_tasks(["demo.noop", "demo.noop"], dry_run=True)
    assert dry.id is None and dry.data["canvas"]
    with pytest.raises(InvalidArgument):
        dry.ready()
    with pytest.raises(InvalidArgument):
        flows.chain_tasks([42])  # type: ignore[list-item]


def test_workflow_get_times_out(skill: CelerySkill) -> None:
    flow = skill.workflow().group_tasks([("demo.sleep", [2])])
    with pytest.raises(WaitTimeout):
        flow.get(timeout=0.3)
    assert flow.get(timeout=15) == [2]


# -- schedules --------------------------------------------------------------------------------


def test_scheduler_adds_crontab_and_interval_entries(skill: CelerySkill) -> None:
    scheduler = skill.scheduler()
    name = f"facade-report-{time.time_ns()}"
    added = scheduler.add_periodic_task(
        "facade.multiply", scheduler.crontab(minute="*/15"), name, args=(2, 3)
    )
    assert added["name"] == name and added["schedule"]["kind"] == "crontab"
    assert scheduler.get_periodic_task(name)["args"] == [2, 3]
    every = scheduler.add_periodic_task("demo.noop", name=f"{name}-every", every=60)
    assert every["schedule"]["every_s"] == 60
    celery_cron = scheduler.add_periodic_task(
        "demo.noop", celery_crontab(hour=3, minute=30), f"{name}-celery"
    )
    assert celery_cron["schedule"]["crontab"] == "30 3 * * *"
    once = scheduler.add_periodic_task(
        "demo.noop", datetime.now() + timedelta(hours=1), f"{name}-once"
    )
    assert once["schedule"]["kind"] == "once"
    with pytest.raises(InvalidArgument, match="not both"):
        scheduler.add_periodic_task("demo.noop", 60, f"{name}-both", every=60)
    listed = scheduler.list_periodic_tasks(task_name="facade.*")
    assert name in {e["name"] for e in listed["entries"]}
    assert not scheduler.disable_periodic_task(name)["enabled"]
    assert scheduler.enable_periodic_task(name)["enabled"]
    assert scheduler.update_periodic_task(name, args=[4, 5])["args"] == [4, 5]
    ran = scheduler.run_periodic_task_now(name)
    assert skill.task_manager().get_result(ran["task_id"], timeout=15)["result"] == 20
    assert not scheduler.remove_periodic_task(name, confirm=False)["executed"]
    for suffix in ("", "-every", "-celery", "-once"):
        assert scheduler.remove_periodic_task(name + suffix)["executed"]
    with pytest.raises(InvalidArgument):
        scheduler.crontab(minute="99")


# -- history ----------------------------------------------------------------------------------


def test_history_reads_a_failed_task_and_retries_it(skill: CelerySkill) -> None:
    history = skill.history()
    tid = skill.task_manager().send_task("facade.boom", args=["history"])["task_id"]
    assert skill.task_manager().get_result(tid, timeout=10)["status"] == "FAILURE"
    detail = history.get_task(tid)
    assert detail["status"] == "FAILURE" and "history" in (detail["exception"] or "")
    listed = history.list_tasks(limit=5)
    assert "recorder" in listed and isinstance(listed["tasks"], list)
    plan = history.retry_failed(task_name="facade.boom", confirm=False)
    assert not plan["executed"]
    rerun = history.retry_task(tid)
    assert rerun["original_id"] == tid and rerun["task_name"] == "facade.boom"
    again = skill.task_manager().get_result(rerun["new_task_id"], timeout=10)
    assert again["error"] == "ValueError: history"


# -- settings and failures --------------------------------------------------------------------


def test_unknown_or_bad_settings_are_refused(data_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="brokr_url"):
        CelerySkill(brokr_url="redis://x")
    with pytest.raises(InvalidArgument, match="toolsets"):
        CelerySkill(data_dir=data_dir, toolsets="nope")


def test_read_only_facade_refuses_changes(data_dir: Path, embedded: EmbeddedServer) -> None:
    with CelerySkill(data_dir=data_dir, read_only=True) as ro:
        with pytest.raises(Forbidden):
            ro.task_manager().send_task("demo.noop")
        assert ro.health_check(include_workers=False)["broker"]["ok"]


def test_unreachable_broker_raises_broker_unavailable(data_dir: Path) -> None:
    start = time.monotonic()
    with CelerySkill(broker_url="redis://127.0.0.1:1/0", data_dir=data_dir) as down:
        health = down.health_check()
        assert not health["ok"] and not health["broker"]["ok"]
        with pytest.raises(BrokerUnavailable):
            down.start_worker()
    assert time.monotonic() - start < 30


def test_send_task_with_broker_down_raises_unavailable(data_dir: Path) -> None:
    with CelerySkill(broker_url="redis://127.0.0.1:1/0", data_dir=data_dir) as down:
        down.register_task(multiply, "facade.multiply")  # known locally: it gets to publishing
        with pytest.raises(Unavailable):
            down.task_manager().send_task("facade.multiply", args=[1, 2])


def test_only_one_local_worker_per_process(skill: CelerySkill, data_dir: Path) -> None:
    with CelerySkill(data_dir=data_dir) as second:
        with pytest.raises(InvalidArgument, match="already runs"):
            second.start_worker()
        with pytest.raises(InvalidArgument, match="pool"):
            second.start_worker(pool="prefork")


#: Facade parameter names that differ from the operation's field (the seed's spelling).
PARAMETER_NAMES = {
    ("get_result", "timeout_s"): "timeout",
    ("send_task", "retry_delay_s"): "retry_delay",
    ("chord_workflow", "header"): "header_tasks",
    ("chord_workflow", "callback"): "callback_task",
}
#: Facade parameters that are no field, and the fields they fill: a Celery schedule object
#: (`schedule_fields` turns it into every, crontab or run_at).
FACADE_ONLY = {
    ("add_periodic_task", "schedule"): {"every", "crontab", "run_at"},
    ("update_periodic_task", "schedule"): {"every", "crontab", "run_at"},
}
#: Where each toolset's methods live.
MANAGERS = {
    "tasks": "task_manager",
    "catalog": "task_manager",
    "workers": "worker_manager",
    "workflows": "workflow",
    "schedules": "scheduler",
    "history": "history",
    "health": None,  # on CelerySkill itself
}


def _forwarded(manager: type, method_name: str, required: list[str], rest: set[str]) -> set[str]:
    """The fields a `**kwargs` method hands its operation when given each of `rest` by keyword
    (a manager built on a recording call: nothing runs)."""
    calls: list[dict[str, object]] = []
    sentinel = object()

    def record(op_name: str, **fields: object) -> dict[str, object]:
        calls.append(fields)
        return {}

    method = getattr(manager(types.SimpleNamespace(_call=record)), method_name)
    method(*(["x"] * len(required)), **dict.fromkeys(rest, sentinel))
    (fields,) = calls
    return {name for name, value in fields.items() if value is sentinel}


def test_every_operation_has_a_facade_method_taking_its_fields(skill: CelerySkill) -> None:
    """Both ways: each field of the operation has a parameter (its own name, a documented
    alias or a method's **kwargs, which must hand it on), and each parameter is a field, an
    alias or a documented facade-only one."""
    problems = []
    for op in OPERATIONS.values():
        manager_name = MANAGERS[op.toolset]
        owner = getattr(skill, manager_name)() if manager_name else skill
        method_name = "health_check" if op.name == "health" else op.name
        method = getattr(owner, method_name, None)
        if method is None:
            problems.append(f"{op.name}: no method")
            continue
        params = pyinspect.signature(method).parameters
        named = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
        fields = set(op.input_model.model_fields)
        aliases = {PARAMETER_NAMES.get((op.name, f), f): f for f in fields}
        for name in sorted(named - set(aliases)):
            fills = FACADE_ONLY.get((op.name, name))
            if not fills or not fills <= fields:
                problems.append(f"{op.name}: parameter {name} is no field")
        rest = {f for a, f in aliases.items() if a not in named}
        if rest and any(p.kind is p.VAR_KEYWORD for p in params.values()):
            required = [n for n, p in params.items() if p.default is p.empty and n in named]
            rest -= _forwarded(type(owner), method_name, required, rest)
        problems += [f"{op.name}: field {f} has no parameter" for f in sorted(rest)]
    assert not problems, problems
