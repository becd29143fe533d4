"""Task catalog and argument checks over MCP, with a user app of typed tasks.

Each catalog test runs twice: once with the app imported by the server (`CELERY_MCP_APP`), once
with the server on the default app, where only the `celery-mcp worker` running the typed app
knows the tasks (it reports their signatures with the `mcp_task_specs` control command). A plain
`celery worker` runs `plain.mystery`, whose signature nobody can tell.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession

from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service.cluster import Cluster
from tests.support import Worker, call, call_error, mcp_session, run_cli, stop_process, wait_until

pytestmark = pytest.mark.anyio

TYPED_APP = "tests.apps.typed_tasks:app"
TYPED_TASKS = 8


@pytest.fixture(scope="module")
def typed_env(env: dict[str, str], embedded: EmbeddedServer) -> dict[str, str]:
    """Env of the typed app's processes: the test broker set explicitly (the app reads it)."""
    return env | {
        "CELERY_MCP_BROKER_URL": embedded.url_for_db(0),
        "CELERY_MCP_RESULT_BACKEND": embedded.url_for_db(1),
    }


@pytest.fixture(scope="module")
def typed_worker(typed_env: dict[str, str], data_dir: Path) -> Iterator[Worker]:
    """A `celery-mcp worker` running the typed app on queue `typed`."""
    w = Worker(
        typed_env | {"CELERY_MCP_APP": TYPED_APP},
        "typed@%h",
        queues="typed",
        pool="threads",
        concurrency=2,
        log_dir=data_dir,
    )
    try:
        yield w.wait_ready()
    finally:
        w.stop()


@pytest.fixture(scope="module")
def plain_worker(typed_env: dict[str, str], data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A plain `celery worker` (not celery-mcp) running `plain.mystery` on queue `plain`."""
    log_path = data_dir / "worker-plain.log"
    cmd = [sys.executable, "-m", "celery", "-A", "tests.apps.plain_tasks:app", "worker"]
    cmd += ["-P", "solo", "-Q", "plain", "--hostname", "plain@%h", "-l", "INFO"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=typed_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b" ready." in log_path.read_bytes(), 30, 0.1, "plain worker ready")
        yield proc
    finally:
        stop_process(proc)


@pytest.fixture(scope="module", params=["app", "worker"])
async def catalog(
    request: pytest.FixtureRequest,
    env: dict[str, str],
    typed_env: dict[str, str],
    typed_worker: Worker,
    plain_worker: subprocess.Popen[bytes],
) -> AsyncIterator[tuple[str, ClientSession]]:
    """(mode, MCP session): the server imports the typed app ("app") or not ("worker")."""
    server_env = typed_env | {"CELERY_MCP_APP": TYPED_APP} if request.param == "app" else env
    async with mcp_session(server_env) as session:
        yield request.param, session


def _queue(mode: str) -> dict[str, str]:
    """send_task options: the default app routes to `celery`, where no worker knows typed.*."""
    return {"queue": "typed"} if mode == "worker" else {}


@pytest.fixture
def idle_queue(cluster: Cluster) -> Iterator[str]:
    """A queue no worker consumes (its length is what was published), deleted after."""
    name = f"idle-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        cluster.broker_redis.delete(name)


async def test_describe_task_gives_schema_signature_and_routing(
    catalog: tuple[str, ClientSession],
) -> None:
    mode, mcp = catalog
    add = await call(mcp, "describe_task", task_name="typed.add")
    assert add["signature"] == "typed.add(x: int, y: int)"
    assert add["parameters_schema"]["properties"] == {
        "x": {"type": "integer"},
        "y": {"type": "integer"},
    }
    assert add["parameters_schema"]["required"] == ["x", "y"]
    assert add["summary"] == "Add two integers."
    assert "strings are refused" in add["doc"]
    assert add["source"] == mode and add["queue"] == "typed"
    assert [w.split("@")[0] for w in add["workers"]] == ["typed"]
    if mode == "worker":
        assert "queue='typed'" in add["note"]


async def test_schemas_follow_the_type_hints(catalog: tuple[str, ClientSession]) -> None:
    _, mcp = catalog
    total = await call(mcp, "describe_task", task_name="typed.total")
    assert total["parameters_schema"]["properties"]["numbers"] == {
        "type": "array",
        "items": {"type": "integer"},
    }
    norm = await call(mcp, "describe_task", task_name="typed.norm")
    schema = norm["parameters_schema"]
    assert schema["properties"]["point"]["properties"]["x"]["type"] == "integer"
    assert schema["properties"]["point"]["required"] == ["x"]
    assert schema["properties"]["scale"] == {"type": "number", "default": 1.0}
    greet = await call(mcp, "describe_task", task_name="typed.greet")
    assert greet["parameters_schema"]["required"] == ["name"]
    params = {p["name"]: p for p in greet["parameters"]}
    assert params["punctuation"]["default"] == "!" and not params["punctuation"]["required"]
    assert params["times"]["type"] == "int | None"


async def test_open_bound_and_retrying_tasks_are_described(
    catalog: tuple[str, ClientSession],
) -> None:
    _, mcp = catalog
    collect = await call(mcp, "describe_task", task_name="typed.collect")
    assert collect["signature"] == "typed.collect(first: str, *rest: int, **options: Any)"
    assert collect["var_args_schema"] == {"type": "array", "items": {"type": "integer"}}
    assert collect["parameters_schema"]["additionalProperties"] is True
    kinds = [p["kind"] for p in collect["parameters"]]
    assert kinds == ["positional_or_keyword", "var_positional", "var_keyword"]
    whoami = await call(mcp, "describe_task", task_name="typed.whoami")
    assert [p["name"] for p in whoami["parameters"]] == ["tag"]  # bind=True: no self
    fragile = await call(mcp, "describe_task", task_name="typed.fragile")
    assert fragile["autoretry_for"] == ["ValueError", "KeyError"]
    assert fragile["max_retries"] == 3 and fragile["default_retry_delay_s"] == 2
    assert fragile["acks_late"] is True and fragile["rate_limit"] == "10/s"
    assert fragile["time_limit_s"] == 30 and fragile["soft_time_limit_s"] == 20


BAD_CALLS: list[tuple[str, dict[str, Any], str, str]] = [
    ("typed.add", {"args": [1]}, "missing a required argument: 'y'", "typed.add(x: int, y: int)"),
    ("typed.add", {"args": [1, 2, 3]}, "too many positional arguments", "typed.add(x: int"),
    (
        "typed.add",
        {"args": [1, 2], "kwargs": {"z": 2}},
        "unexpected keyword argument 'z'",
        "y: int",
    ),
    ("typed.add", {"args": [1, "2"]}, "y: '2' is not of type 'integer'", "typed.add(x: int"),
    ("typed.total", {"args": [[1, "x"]]}, "numbers[1]: 'x' is not of type", "list[int]"),
    ("typed.norm", {"args": [{"x": "far"}]}, "point.x: 'far' is not of type", "point: Point"),
    ("typed.collect", {"args": ["a", 1, "b"]}, "*rest[1]: 'b' is not of type", "*rest: int"),
    ("typed.greet", {"kwargs": {"name": "bo", "times": "3"}}, "times: '3'", "name: str"),
]


@pytest.mark.parametrize(("task", "call_args", "problem", "expected"), BAD_CALLS)
async def test_bad_arguments_are_refused_and_nothing_is_published(
    catalog: tuple[str, ClientSession],
    cluster: Cluster,
    idle_queue: str,
    task: str,
    call_args: dict[str, Any],
    problem: str,
    expected: str,
) -> None:
    _, mcp = catalog
    text = await call_error(mcp, "send_task", task_name=task, queue=idle_queue, **call_args)
    assert "invalid_argument" in text and problem in text and expected in text, text
    assert cluster.broker_redis.llen(idle_queue) == 0


async def test_validate_args_false_publishes_unchecked(
    catalog: tuple[str, ClientSession], cluster: Cluster, idle_queue: str
) -> None:
    _, mcp = catalog
    await call(mcp, "send_task", task_name="typed.add", args=[1, 2], queue=idle_queue)
    assert cluster.broker_redis.llen(idle_queue) == 1  # the measure works: good args arrive
    await call(
        mcp, "send_task", task_name="typed.add", args=["a"], queue=idle_queue, validate_args=False
    )
    assert cluster.broker_redis.llen(idle_queue) == 2


async def _run(mcp: ClientSession, task: str, mode: str, **call_args: Any) -> Any:
    sent = await call(mcp, "send_task", task_name=task, **_queue(mode), **call_args)
    result = await call(mcp, "get_result", task_id=sent["task_id"], timeout_s=15)
    assert result["success"], result
    return result["result"]


async def test_good_arguments_run(catalog: tuple[str, ClientSession]) -> None:
    mode, mcp = catalog
    assert await _run(mcp, "typed.add", mode, args=[2, 3]) == 5
    assert await _run(mcp, "typed.total", mode, kwargs={"numbers": [1, 2, 3]}) == 6
    assert await _run(mcp, "typed.norm", mode, args=[{"x": 3, "y": -4}], kwargs={"scale": 2}) == 14
    collected = await _run(mcp, "typed.collect", mode, args=["a", 1, 2], kwargs={"k": [1]})
    assert collected == {"first": "a", "rest": [1, 2], "options": {"k": [1]}}
    assert (await _run(mcp, "typed.whoami", mode, kwargs={"tag": "t"})).startswith("t:")


async def test_rate_limited_task_runs(catalog: tuple[str, ClientSession]) -> None:
    # workers list it as 'typed.fragile [rate_limit=...]': the name must still count as known
    mode, mcp = catalog
    assert await _run(mcp, "typed.fragile", mode, args=["k"]) == "k"


async def test_list_task_types_filters_and_pages(catalog: tuple[str, ClientSession]) -> None:
    mode, mcp = catalog
    listed = await call(mcp, "list_task_types", pattern="typed.*")
    assert listed["total"] == TYPED_TASKS and listed["next_offset"] is None
    names = [t["name"] for t in listed["tasks"]]
    assert names == sorted(names) and "typed.add" in names
    add = next(t for t in listed["tasks"] if t["name"] == "typed.add")
    assert add["signature"] == "typed.add(x: int, y: int)" and add["summary"] == "Add two integers."
    assert add["source"] == mode and add["worker_count"] == 1
    first = await call(mcp, "list_task_types", pattern="typed.*", limit=3)
    assert [t["name"] for t in first["tasks"]] == names[:3] and first["next_offset"] == 3
    last = await call(mcp, "list_task_types", pattern="typed.*", offset=6, limit=3)
    assert [t["name"] for t in last["tasks"]] == names[6:] and last["next_offset"] is None
    greet = await call(mcp, "list_task_types", pattern="gree")
    assert [t["name"] for t in greet["tasks"]] == ["typed.greet"]


async def test_task_of_a_plain_worker_has_unknown_signature(
    catalog: tuple[str, ClientSession],
) -> None:
    _, mcp = catalog
    listed = await call(mcp, "list_task_types", pattern="plain.*")
    assert listed["tasks"] == [
        {
            "name": "plain.mystery",
            "signature": None,
            "summary": "",
            "source": "unknown",
            "worker_count": 1,
        }
    ]
    described = await call(mcp, "describe_task", task_name="plain.mystery")
    assert described["source"] == "unknown" and described["parameters_schema"] is None
    assert "signature unknown" in described["note"]
    assert [w.split("@")[0] for w in described["workers"]] == ["plain"]


async def test_unknown_task_is_refused_with_the_catalog_size(
    catalog: tuple[str, ClientSession],
) -> None:
    _, mcp = catalog
    text = await call_error(mcp, "describe_task", task_name="typed.nope")
    assert "unknown_task" in text and "'typed.nope'" in text and "list_task_types" in text


def test_cli_describes_and_refuses_bad_arguments(
    typed_env: dict[str, str], typed_worker: Worker
) -> None:
    app_env = typed_env | {"CELERY_MCP_APP": TYPED_APP}
    code, out = run_cli(app_env, "--action", "describe_task", "--task-name", "typed.greet")
    assert code == 0, out
    assert (
        out["signature"]
        == "typed.greet(name: str, punctuation: str = '!', times: int | None = None)"
    )
    code, out = run_cli(
        app_env, "--action", "send_task", "--task-name", "typed.add", "--args", '[1, "x"]'
    )
    assert code != 0 and out["error"]["code"] == "invalid_argument", out
    assert "typed.add(x: int, y: int)" in out["error"]["message"]
