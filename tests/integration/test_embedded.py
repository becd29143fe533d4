"""The embedded Valkey: shared, persistent, recovered; and bounded tools when it is down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_mcp.errors import BrokerUnavailable
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
    """A crashed server comes back on its free port with its password: clients' URLs hold."""
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


def test_restart_on_a_new_port_gets_a_new_password(tmp_path: Path) -> None:
    """The old port taken (by another local user, say) while the server was down: the server
    moves, and the old password, which old URLs may have sent to that port, opens nothing."""
    data = tmp_path / "data"
    first = emb.ensure_running(data)
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not emb.ping(first, 0.1), 5, what="server down")
    try:
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", first.port))
            squatter.listen()
            second = emb.ensure_running(data)
        assert second.port != first.port and second.password != first.password
        assert emb.ping(second) and not emb.ping(replace(second, password=first.password))
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=second.port, password=first.password, socket_timeout=5).ping()
        assert emb.read_state(data) == second
    finally:
        emb.stop(data)


def _write_record(data: Path, **state: Any) -> None:
    data.mkdir(mode=0o700, exist_ok=True)
    path = data / emb.STATE_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)


@pytest.fixture(params=["proc", "no-proc"])
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Linux as it is, or as if there were no /proc (macOS): pids are then known from `ps`."""
    if request.param == "no-proc":
        for name in ("exists", "read_text", "read_bytes"):
            monkeypatch.setattr(Path, name, _without_proc(name, getattr(Path, name)))
    return str(request.param)


def _without_proc(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Path, *args: Any, **kwargs: Any) -> Any:
        if str(self).startswith("/proc/"):
            if name == "exists":
                return False
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real(self, *args, **kwargs)

    return method


@pytest.mark.parametrize("record", ["legacy", "recorded"])
def test_a_recycled_pid_is_neither_trusted_nor_signalled(
    tmp_path: Path, platform: str, record: str
) -> None:
    """After a reboot the recorded pid is an unrelated process: a new server starts, and
    `broker stop` stops that one only. `recorded`: the impostor even bears the server's name
    (only its start time differs); `legacy`: a record without name and start time."""
    data = tmp_path / "data"
    binary = str(shutil.which("sleep"))
    state: dict[str, Any] = {"port": emb._free_port(), "password": "old", "data_dir": str(data)}
    if record == "recorded":
        binary = str(shutil.copy(binary, tmp_path / "valkey-server"))
        state |= {"name": "valkey-server", "started": "proc:before-reboot:4242"}
    impostor = subprocess.Popen([binary, "60"])
    try:
        _write_record(data, pid=impostor.pid, **state)
        server = emb.ensure_running(data)
        assert server.pid != impostor.pid and emb.ping(server)
        assert emb.stop(data) is True and not emb.ping(server, 0.1)
        assert emb.stop(data) is False
        assert impostor.poll() is None, "the unrelated process was signalled"
    finally:
        impostor.kill()
        impostor.wait()
        emb.stop(data)


def test_own_server_not_answering_is_a_typed_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = emb.ensure_running(data)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(emb.EmbeddedServerUnresponsive) as err:
            emb.ensure_running(data)
        assert f"pid {server.pid}" in err.value.message and str(data) in err.value.message
        assert isinstance(err.value, BrokerUnavailable)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        emb.stop(data)


def test_a_server_answering_under_a_wrong_pid_is_not_doubled(tmp_path: Path) -> None:
    """Our password answers on the recorded port, but the pid is another process: no second
    server is started on the same AOF, and the other process is not signalled."""
    data = tmp_path / "data"
    server = emb.ensure_running(data)
    other = subprocess.Popen(["sleep", "60"])
    try:
        _write_record(data, **(asdict(server) | {"pid": other.pid}))
        with pytest.raises(emb.EmbeddedServerUnresponsive, match=f"pid {other.pid} is not it"):
            emb.ensure_running(data)
        assert emb.stop(data) is False and other.poll() is None and emb.ping(server)
    finally:
        other.kill()
        other.wait()
        os.kill(server.pid, signal.SIGTERM)
        wait_until(lambda: not emb.ping(server, 0.1), 10, what="server down")
        emb._reap(server.pid)


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
