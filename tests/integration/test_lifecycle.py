"""What a stop leaves running: `serve --with-worker` takes its worker and monitor with it on
SIGTERM, SIGINT and SIGHUP, and they stop by themselves when it is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from celery_mcp.runtime.embedded import EmbeddedServer
from tests.support import free_port, wait_until


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _serve_with_worker(
    env: dict[str, str], transport: str, stderr: Path
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A server (stdio: its stdin held open, as a client does) with its worker and monitor."""
    http = ["--transport", "http", "--port", str(free_port())] if transport == "http" else []
    with open(stderr, "wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "celery_mcp", "serve", "--with-worker", *http],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    children = wait_until(lambda: len(_children(server.pid)) >= 2 and _children(server.pid), 20)
    return server, list(children)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    ("transport", "how"),
    [("stdio", s) for s in ("SIGTERM", "SIGINT", "SIGHUP", "SIGKILL")]
    + [("http", s) for s in ("SIGTERM", "SIGHUP")],
)
def test_serve_with_worker_leaves_nothing_running(
    transport: str,
    how: str,
    env: dict[str, str],
    embedded: EmbeddedServer,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    log = data_dir / "worker.log"
    before = log.stat().st_size if log.exists() else 0
    stderr = tmp_path / "serve.err"
    server, children = _serve_with_worker(env, transport, stderr)
    try:
        wait_until(lambda: b"ready" in log.read_bytes()[before:], 30, 0.1, "the worker is ready")
        os.kill(server.pid, getattr(signal, how))
        server.wait(timeout=20)
        # the worker's pool processes are its own children: the worker stops them
        wait_until(lambda: not any(_alive(pid) for pid in children), 20, 0.1, "children stop")
        if how != "SIGKILL":  # it wound down: says the Valkey stays up, forgets its worker
            assert "keeps running for other sessions" in stderr.read_text(), stderr.read_text()
            assert not list(data_dir.glob(f"worker-demo-{server.pid}_*")), "statedb left"
    finally:
        for pid in [server.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if server.stdin is not None:
            server.stdin.close()


def _timer_slack_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/timerslack_ns").read_text())


@pytest.mark.skipif(not Path("/proc/self/timerslack_ns").exists(), reason="Linux timer slack")
def test_the_server_times_its_waits_tightly_and_its_children_keep_the_default(
    env: dict[str, str], embedded: EmbeddedServer, tmp_path: Path
) -> None:
    default = _timer_slack_ns(os.getpid())
    server, children = _serve_with_worker(env, "stdio", tmp_path / "serve.err")
    try:
        wait_until(lambda: _timer_slack_ns(server.pid) == 1, 20, 0.1, "serve sets 1 ns")
        assert [_timer_slack_ns(pid) for pid in children] == [default] * len(children)
    finally:
        for pid in [server.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        server.wait(timeout=20)
        wait_until(lambda: not any(_alive(pid) for pid in children), 20, 0.1, "children stop")
        if server.stdin is not None:
            server.stdin.close()
