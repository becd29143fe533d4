"""Workflows over MCP stdio against the embedded Valkey and a real prefork worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from mcp import ClientSession

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.workflows import GroupInput
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.workflows import group_tasks
from tests.support import Worker, call, call_error, mcp_session

pytestmark = pytest.mark.anyio

TOOLS = {"chain_tasks", "group_tasks", "chord_workflow", "map_task", "get_workflow"}


@pytest.fixture(scope="module")
async def mcp(env: dict[str, str], worker: Worker) -> AsyncIterator[ClientSession]:
    """An MCP session with the opt-in workflows toolset (and tasks, for get_result)."""
    async with mcp_session(env, "--toolsets", "tasks,workflows") as session:
        yield session


def add(x: int, y: int, **options: Any) -> dict[str, Any]:
    return {"task_name": "demo.add", "args": [x, y], **options}


@pytest.fixture
def idle_queue(cluster: Cluster) -> Iterator[str]:
    """A queue no worker consumes: what lands there was published and stays countable."""
    name = f"wf-idle-{uuid.uuid4().hex[:8]}"
    yield name
    cluster.broker_redis.delete(name)


def queued(cluster: Cluster, queue: str) -> int:
    return int(cluster.broker_redis.llen(queue))


async def test_workflow_tools_are_listed_with_annotations(mcp: ClientSession) -> None:
    tools = {t.name: t for t in (await mcp.list_tools()).tools}
    assert set(tools) >= TOOLS
    reader, writer = tools["get_workflow"].annotations, tools["chain_tasks"].annotations
    assert reader is not None and reader.read_only_hint is True
    assert writer is not None and not writer.read_only_hint
    assert "steps" in tools["chain_tasks"].input_schema["properties"]


async def test_three_step_etl_chain_passes_each_result_on(mcp: ClientSession) -> None:
    steps = [
        add(1, 2),  # extract: 3
        {"task_name": "demo.mul", "args": [10]},  # transform: 3 * 10
        {"task_name": "demo.add", "args": [5]},  # load: 30 + 5
    ]
    sent = await call(mcp, "chain_tasks", steps=steps)
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=20)
    assert result["success"] and result["result"] == 35
    tree = await call(mcp, "get_workflow", workflow_id=sent["workflow_id"])
    assert tree["kind"] == "chain" and tree["status"] == "SUCCESS" and tree["ready"]
    assert [n["result"] for n in tree["nodes"]] == [3, 30, 35]
    assert [n["task_name"] for n in tree["nodes"]] == ["demo.add", "demo.mul", "demo.add"]
    assert tree["counts"] == {"SUCCESS": 3} and tree["result"] == 35
    assert tree["nodes"][-1]["task_id"] == sent["workflow_id"]


async def test_failing_middle_step_stops_the_chain_and_shows_where(mcp: ClientSession) -> None:
    steps = [
        add(1, 2),
        {"task_name": "demo.fail", "kwargs": {"message": "bad transform"}, "immutable": True},
        {"task_name": "demo.add", "args": [5]},
    ]
    sent = await call(mcp, "chain_tasks", steps=steps)
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=20)
    assert result["status"] == "FAILURE" and result["error"] == "RuntimeError: bad transform"
    tree = await call(mcp, "get_workflow", workflow_id=sent["workflow_id"])
    assert tree["status"] == "FAILURE" and tree["failed_at"] == 1
    assert [n["status"] for n in tree["nodes"]] == ["SUCCESS", "FAILURE", "NOT_RUN"]
    assert tree["nodes"][1]["error"] == "RuntimeError: bad transform"
    assert "step 1 (demo.fail) failed" in tree["nodes"][2]["error"]
    assert "bad transform" in tree["error"]
    only = await call(mcp, "get_workflow", workflow_id=sent["workflow_id"], status=["NOT_RUN"])
    assert [n["index"] for n in only["nodes"]] == [2]


async def test_group_of_100_resolves_to_the_list_of_results(mcp: ClientSession) -> None:
    sent = await call(mcp, "group_tasks", tasks=[add(i, i) for i in range(100)])
    gid = sent["workflow_id"]
    assert sent["task_count"] == 100
    result = await call(mcp, "get_result", task_id=gid, timeout_s=60)
    assert result["success"] and result["result"] == [2 * i for i in range(100)]
    status = await call(mcp, "get_status", task_id=gid)
    assert status["status"] == "SUCCESS" and status["ready"]
    page = await call(mcp, "get_workflow", workflow_id=gid, offset=90, limit=50)
    assert page["counts"] == {"SUCCESS": 100} and page["total"] == 100
    assert [n["index"] for n in page["nodes"]] == list(range(90, 100)) and not page["more"]
    first = await call(mcp, "get_workflow", workflow_id=gid, limit=10)
    assert len(first["nodes"]) == 10 and first["more"]


async def test_chord_of_100_sums_the_header_results(mcp: ClientSession) -> None:
    sent = await call(
        mcp,
        "chord_workflow",
        header=[add(i, 1) for i in range(100)],
        callback={"task_name": "demo.xsum"},
    )
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=60)
    assert result["success"] and result["result"] == sum(range(1, 101))
    tree = await call(mcp, "get_workflow", workflow_id=sent["workflow_id"], limit=5)
    assert tree["kind"] == "chord" and tree["total"] == 101
    assert tree["callback"]["status"] == "SUCCESS" and tree["callback"]["result"] == 5050
    assert tree["counts"] == {"SUCCESS": 101}


async def test_failing_chord_header_fails_the_chord_id(mcp: ClientSession) -> None:
    header = [add(1, 1), {"task_name": "demo.fail", "kwargs": {"message": "bad part"}}, add(2, 2)]
    sent = await call(mcp, "chord_workflow", header=header, callback={"task_name": "demo.xsum"})
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=30)
    assert result["status"] == "FAILURE" and result["ready"]
    assert "ChordError" in result["error"] and "bad part" in result["error"]
    tree = await call(mcp, "get_workflow", workflow_id=sent["workflow_id"])
    assert tree["status"] == "FAILURE" and tree["failed_at"] == 1
    assert tree["nodes"][1]["error"] == "RuntimeError: bad part"
    assert tree["callback"]["status"] == "FAILURE"


async def test_map_of_1000_items_with_a_callback(mcp: ClientSession) -> None:
    sent = await call(
        mcp,
        "map_task",
        task_name="demo.add",
        items=[[i, i] for i in range(1000)],
        chord_callback={"task_name": "demo.xsum"},
    )
    assert sent["task_count"] == 1001
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=120)
    assert result["success"] and result["result"] == sum(2 * i for i in range(1000))
    tree = await call(mcp, "get_workflow", workflow_id=sent["workflow_id"], limit=500)
    assert tree["counts"] == {"SUCCESS": 1001} and tree["kind"] == "map"
    assert tree["more"] and 0 < len(tree["nodes"]) <= 500  # output cap may cut the page
    assert [n["result"] for n in tree["nodes"][:3]] == [0, 2, 4]


async def test_chunked_map_runs_chunks_and_returns_chunk_lists(mcp: ClientSession) -> None:
    items = [[i, 1] for i in range(100)]
    sent = await call(mcp, "map_task", task_name="demo.add", items=items, chunk_size=30)
    assert sent["task_count"] == 4
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=30)
    assert result["success"]
    assert [x for chunk in result["result"] for x in chunk] == list(range(1, 101))
    tree = await call(mcp, "get_workflow", workflow_id=sent["workflow_id"])
    assert [n["items"] for n in tree["nodes"]] == [30, 30, 30, 10]
    assert {n["task_name"] for n in tree["nodes"]} == {"demo.add"}


async def test_unknown_task_in_a_later_step_publishes_nothing(
    mcp: ClientSession, cluster: Cluster, idle_queue: str
) -> None:
    steps = [add(1, 2, queue=idle_queue), {"task_name": "demo.nope", "queue": idle_queue}]
    text = await call_error(mcp, "chain_tasks", steps=steps)
    assert "unknown_task" in text and "demo.nope" in text
    header = [add(1, 2, queue=idle_queue)]
    text = await call_error(mcp, "chord_workflow", header=header, callback={"task_name": "x.y"})
    assert "unknown_task" in text and "'x.y'" in text
    assert queued(cluster, idle_queue) == 0


async def test_empty_workflows_are_refused(mcp: ClientSession) -> None:
    for tool, args in (
        ("chain_tasks", {"steps": []}),
        ("group_tasks", {"tasks": []}),
        ("chord_workflow", {"header": [], "callback": {"task_name": "demo.xsum"}}),
        ("map_task", {"task_name": "demo.add", "items": []}),
    ):
        text = await call_error(mcp, tool, **args)
        assert "invalid_argument" in text and "empty workflow" in text, text


async def test_unchecked_bad_arity_is_refused_before_the_first_message(
    mcp: ClientSession, cluster: Cluster, idle_queue: str
) -> None:
    items = [[1, 2], [1, 2], [1]]  # the last call misses an argument
    options = {"queue": idle_queue}
    text = await call_error(
        mcp, "map_task", task_name="demo.add", items=items, options=options, validate_args=False
    )
    assert "invalid_argument" in text and "demo.add" in text and "args=[1]" in text
    assert queued(cluster, idle_queue) == 0


def test_oversized_workflow_is_refused_before_publishing(cluster: Cluster, idle_queue: str) -> None:
    small = Cluster(cluster.settings.model_copy(update={"max_workflow_size": 5}))
    request = GroupInput.model_validate({"tasks": [add(i, i, queue=idle_queue) for i in range(6)]})
    with pytest.raises(InvalidArgument, match="6 tasks is over the cap of 5"):
        group_tasks(small, request)
    assert queued(cluster, idle_queue) == 0


async def test_dry_run_returns_the_canvas_and_publishes_nothing(
    mcp: ClientSession, cluster: Cluster, idle_queue: str
) -> None:
    dry = await call(
        mcp,
        "chord_workflow",
        header=[add(1, 2, queue=idle_queue, countdown=5)],
        callback={"task_name": "demo.xsum", "queue": idle_queue},
        dry_run=True,
    )
    assert dry["workflow_id"] is None and dry["task_count"] == 2
    canvas = dry["canvas"]
    assert canvas["task"] == "celery.chord"
    assert canvas["kwargs"]["body"]["task"] == "demo.xsum"
    header = canvas["kwargs"]["header"][0]
    assert header["args"] == [1, 2] and header["options"]["queue"] == idle_queue
    assert header["options"]["countdown"] == 5
    assert queued(cluster, idle_queue) == 0


async def test_step_options_reach_the_message(
    mcp: ClientSession, cluster: Cluster, idle_queue: str
) -> None:
    sent = await call(mcp, "group_tasks", tasks=[add(1, 2, queue=idle_queue, expires=600)])
    assert queued(cluster, idle_queue) == 1
    message = json.loads(cluster.broker_redis.lindex(idle_queue, 0))
    assert message["headers"]["task"] == "demo.add" and message["headers"]["expires"]
    assert message["headers"]["group"] == sent["workflow_id"]
    status = await call(mcp, "get_status", task_id=sent["workflow_id"])
    assert status["status"] == "PENDING" and not status["ready"]


async def test_retries_apply_to_a_step_the_worker_publishes(mcp: ClientSession) -> None:
    key = f"wf-retry-{uuid.uuid4().hex[:8]}"
    flaky = {"task_name": "demo.flaky", "args": [key, 2], "immutable": True}
    steps = [add(1, 2), flaky | {"retries": 3, "retry_delay_s": 0.1}]
    sent = await call(mcp, "chain_tasks", steps=steps)
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=20)
    assert result["success"] and result["result"] == "ok after 3 attempts"


async def test_retries_apply_to_the_chunks_of_a_chunked_map(mcp: ClientSession) -> None:
    key = f"map-retry-{uuid.uuid4().hex[:8]}"
    sent = await call(
        mcp,
        "map_task",
        task_name="demo.flaky",
        items=[[key, 1]],
        chunk_size=1,
        options={"retries": 2, "retry_delay_s": 0.1},
    )
    result = await call(mcp, "get_result", task_id=sent["workflow_id"], timeout_s=20)
    assert result["success"] and result["result"] == [["ok after 2 attempts"]], result


async def test_get_workflow_of_an_unknown_id_is_not_found(mcp: ClientSession) -> None:
    text = await call_error(mcp, "get_workflow", workflow_id="no-such-workflow")
    assert "not_found" in text and "no-such-workflow" in text


async def test_chain_and_chord_with_wait_return_the_result_in_one_call(
    mcp: ClientSession,
) -> None:
    chained = await call(
        mcp, "chain_tasks", steps=[add(1, 2), {"task_name": "demo.mul", "args": [10]}], wait_s=15
    )
    assert chained["outcome"]["result"] == 30, chained
    assert chained["outcome"]["task_id"] == chained["workflow_id"]
    chord = await call(
        mcp,
        "chord_workflow",
        header=[add(i, i) for i in range(5)],
        callback={"task_name": "demo.xsum"},
        wait_s=15,
    )
    assert chord["outcome"]["result"] == 20, chord
