"""Pure logic of the workers toolset: control arguments per command, reply and task parsing."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from pydantic import ValidationError

from celery_mcp.config import Settings
from celery_mcp.models.common import Truncation
from celery_mcp.models.workers import COMMAND_ARGUMENTS, ControlCommand, ControlInput
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.discovery import Census, registered_names
from celery_mcp.service.workers import COMMANDS, _broker_kind, _pool_name, _reply, _task

VALID: dict[ControlCommand, dict[str, Any]] = {
    ControlCommand.POOL_RESTART: {},
    ControlCommand.POOL_GROW: {"n": 2},
    ControlCommand.POOL_SHRINK: {},
    ControlCommand.AUTOSCALE: {"max": 4, "min": 1},
    ControlCommand.ADD_CONSUMER: {"queue": "q1"},
    ControlCommand.CANCEL_CONSUMER: {"queue": "q1"},
    ControlCommand.RATE_LIMIT: {"task_name": "demo.add", "rate": "10/m"},
    ControlCommand.TIME_LIMIT: {"task_name": "demo.add", "soft": 5, "hard": 10},
}


def test_every_command_has_arguments_an_example_and_a_function() -> None:
    assert set(VALID) == set(ControlCommand) == set(COMMAND_ARGUMENTS) == set(COMMANDS)


@pytest.mark.parametrize("command", list(ControlCommand))
def test_each_command_accepts_its_arguments(command: ControlCommand) -> None:
    ControlInput(command=command, **VALID[command])


@pytest.mark.parametrize("command", [c for c, (req, _) in COMMAND_ARGUMENTS.items() if req])
def test_missing_required_argument_is_named(command: ControlCommand) -> None:
    required, _ = COMMAND_ARGUMENTS[command]
    args = {k: v for k, v in VALID[command].items() if k != required[-1]}
    with pytest.raises(ValidationError, match=f"{command.value} takes .*missing {required[-1]}"):
        ControlInput(command=command, **args)


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (ControlCommand.POOL_RESTART, {"n": 1}),
        (ControlCommand.POOL_GROW, {"queue": "q"}),
        (ControlCommand.ADD_CONSUMER, {"queue": "q", "task_name": "demo.add"}),
        (ControlCommand.RATE_LIMIT, {"task_name": "demo.add", "rate": "1/s", "hard": 3}),
    ],
)
def test_argument_of_another_command_is_refused(
    command: ControlCommand, extra: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="unexpected"):
        ControlInput(command=command, **extra)


@pytest.mark.parametrize("rate", ["10", "0", "1.5/s", "100/m", "5/h"])
def test_rate_forms_accepted(rate: str) -> None:
    ControlInput(command="rate_limit", task_name="demo.add", rate=rate)


@pytest.mark.parametrize("rate", ["fast", "10/d", "-1", "1/s/s", ""])
def test_rate_forms_refused(rate: str) -> None:
    with pytest.raises(ValidationError):
        ControlInput(command="rate_limit", task_name="demo.add", rate=rate)


def test_bounds_are_ordered() -> None:
    with pytest.raises(ValidationError, match="min <= max"):
        ControlInput(command="autoscale", max=1, min=3)
    with pytest.raises(ValidationError, match="soft <= hard"):
        ControlInput(command="time_limit", task_name="demo.add", soft=10, hard=1)
    ControlInput(command="time_limit", task_name="demo.add")  # no limits: removes them


def test_worker_replies_become_ok_or_error() -> None:
    assert _reply("w@h", {"ok": "pool will grow"}).ok
    refused = _reply("w@h", {"error": "ValueError('Autoscale not enabled')"})
    assert not refused.ok and "Autoscale" in refused.message
    assert not _reply("w@h", "pong").ok


def test_pool_name_is_the_module() -> None:
    assert _pool_name("celery.concurrency.prefork:TaskPool") == "prefork"
    assert _pool_name("celery.concurrency.thread:TaskPool") == "thread"
    assert _pool_name(None) is None


def test_task_entries_parse_active_and_scheduled_shapes() -> None:
    cuts: list[Truncation] = []
    cluster = Cluster(Settings(broker_url="amqp://guest@localhost//"))  # no connection made
    active = _task(
        cluster,
        {
            "id": "t1",
            "name": "demo.add",
            "args": [1, 2],
            "kwargs": {},
            "time_start": 1_700_000_000.5,
            "worker_pid": 42,
            "acknowledged": True,
            "delivery_info": {"routing_key": "qa", "priority": 3},
        },
        "w1@h",
        cuts,
    )
    assert (active.queue, active.worker_pid, active.priority) == ("qa", 42, 3)
    assert active.worker == "w1@h"
    assert active.started_at is not None and active.started_at.year == 2023
    scheduled = _task(
        cluster,
        {"eta": "2030-01-01T00:00:00+00:00", "priority": 6, "request": {"id": "t2", "args": []}},
        "w1@h",
        cuts,
    )
    assert scheduled.eta is not None and scheduled.priority == 6 and scheduled.id == "t2"
    big = _task(cluster, {"id": "t3", "args": ["x" * 10_000]}, "w1@h", cuts)
    assert isinstance(big.args, str) and len(cuts) == 1 and "args" in str(cuts[0])


def test_census_is_stale_when_fewer_connected_than_registered() -> None:
    assert Census(registered=frozenset({"a", "b"}), connected=1).stale
    assert not Census(registered=frozenset({"a"}), connected=1).stale


def test_registered_names_drop_the_rate_limit_suffix() -> None:
    replies = {"w@h": ["demo.add", "demo.noop [rate_limit=2/s]"], "v@h": None}
    assert registered_names(replies) == {"w@h": ["demo.add", "demo.noop"], "v@h": []}


def test_an_empty_destination_is_refused_not_read_as_everyone() -> None:
    with pytest.raises(ValidationError):
        ControlInput(command="pool_grow", destination=[])


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis+socket:///run/redis.sock?virtual_host=2", "redis"),
        ("valkeys://localhost:6380/0", "redis"),
        ("unix:///run/redis.sock", "redis"),
        ("valkey://localhost/0", "redis"),
        ("pyamqp://guest@localhost//", "amqp"),
        ("amqps://guest@localhost//", "amqp"),
        ("sqs://", "sqs"),
    ],
)
def test_broker_kind_reads_the_one_scheme_table(url: str, kind: str) -> None:
    app = Celery(broker=url, set_as_current=False)  # no connection made
    assert _broker_kind(Cluster(Settings(), app=app)) == kind
