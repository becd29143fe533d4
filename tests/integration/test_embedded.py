"""The embedded Valkey: shared, persistent, recovered; and bounded tools when it is down."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celery_mcp.runtime import embedded as emb
from tests.support import Worker, call, mcp_session, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def own_env(tmp_path: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Settings with a data dir (and so an embedded server) of this test alone."""
    data = tmp_path / "data"
    yield env | {"CELERY_MCP_DATA_DIR": str(data)}
    emb.stop(data)


def test_server_binds_loopback_only_with_aof(embedded: emb.EmbeddedServer) -> None:
    client = redis.Redis.from_url(embedded.url)
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("appendfsync")["appendfsync"] == "everysec"
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=embedded.port).ping()


def test_state_file_is_private(embedded: emb.EmbeddedServer) -> None:
    mode = (Path(embedded.data_dir) / emb.STATE_FILE).stat().st_mode & 0o777
    assert mode == 0o600


def test_stale_state_file_is_recovered(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = emb.ensure_running(data)
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not emb.ping(first, 0.1), 5, what="server down")
    try:
        second = emb.ensure_running(data)
        assert second.pid != first.pid and emb.ping(second)
        assert (second.port, second.password) == (first.port, first.password)
    finally:
        emb.stop(data)


def test_concurrent_starts_share_one_server(tmp_path: Path) -> None:
    import concurrent.futures

    data = tmp_path / "data"
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            servers = list(pool.map(lambda _: emb.ensure_running(data), range(4)))
        assert len({s.pid for s in servers}) == 1
    finally:
        emb.stop(data)


async def test_serve_restart_reuses_running_server(own_env: dict[str, str]) -> None:
    async with mcp_session(own_env) as session:
        health = await call(session, "health", include_workers=False)
        assert health["broker"]["ok"] and health["embedded"]
    state = emb.read_state(Path(own_env["CELERY_MCP_DATA_DIR"]))
    assert state and emb.ping(state)
    async with mcp_session(own_env) as session:
        await call(session, "health", include_workers=False)
    again = emb.read_state(Path(own_env["CELERY_MCP_DATA_DIR"]))
    assert again == state


async def test_killed_server_keeps_queued_tasks(own_env: dict[str, str], tmp_path: Path) -> None:
    data = Path(own_env["CELERY_MCP_DATA_DIR"])
    async with mcp_session(own_env) as session:
        ids = [
            (await call(session, "send_task", task_name="demo.add", args=[i, i]))["task_id"]
            for i in range(5)
        ]
    time.sleep(1.5)  # appendfsync everysec
    state = emb.read_state(data)
    assert state
    os.kill(state.pid, signal.SIGKILL)
    wait_until(lambda: not emb.ping(state, 0.1), 5, what="server down")
    worker = None
    try:
        async with mcp_session(own_env) as session:  # serve restarts the embedded server
            worker = Worker(own_env, "recover@%h", log_dir=tmp_path).wait_ready()
            for i, tid in enumerate(ids):
                result = await call(session, "get_result", task_id=tid, timeout_s=20)
                assert result["success"] and result["result"] == 2 * i
    finally:
        if worker:
            worker.stop()
    assert emb.read_state(data).pid != state.pid  # type: ignore[union-attr]


async def test_every_tool_errors_within_3s_when_broker_is_down(own_env: dict[str, str]) -> None:
    data = Path(own_env["CELERY_MCP_DATA_DIR"])
    async with mcp_session(own_env) as session:
        sent = await call(session, "send_task", task_name="demo.add", args=[1, 2])
        emb.stop(data)
        calls = {
            "send_task": {"task_name": "demo.add", "args": [1, 2]},
            "get_status": {"task_id": sent["task_id"]},
            "get_result": {"task_id": sent["task_id"], "timeout_s": 1},
            "revoke": {"task_id": sent["task_id"]},
        }
        for tool, arguments in calls.items():
            start = time.monotonic()
            result = await session.call_tool(tool, arguments)
            elapsed = time.monotonic() - start
            assert result.is_error, (tool, result.structured_content)
            assert elapsed < 3.0, (tool, elapsed)
        start = time.monotonic()
        health = await call(session, "health")
        assert time.monotonic() - start < 3.0
        assert health["ok"] is False and health["broker"]["ok"] is False
        assert "***" in health["broker_url"] and emb.read_state(data).password not in str(health)  # type: ignore[union-attr]


def test_never_binds_public_address(embedded: emb.EmbeddedServer) -> None:
    public = [a for a in _local_addresses() if not a.startswith("127.")]
    for address in public:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            assert sock.connect_ex((address, embedded.port)) != 0


def _local_addresses() -> list[str]:
    try:
        return sorted(
            {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        )
    except OSError:
        return []
