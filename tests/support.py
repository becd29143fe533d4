"""Real processes for the tests: embedded Valkey, `celery-mcp worker`, MCP server over stdio.

Nothing here mocks Celery, the broker or MCP: workers are `python -m celery_mcp worker`
processes, the server is `python -m celery_mcp serve` driven by the official MCP client.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns a truthy value or `timeout_s` passes (then fail)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


def stop_process(
    proc: subprocess.Popen[Any], timeout_s: float = 15.0, *, group: bool = False
) -> None:
    """SIGTERM `proc` (its whole process group with `group`), SIGKILL it after `timeout_s`."""

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    if proc.poll() is not None:
        return
    send(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(5)


class Worker:
    """A real worker process: `celery-mcp worker`, or with `app` a stock `celery -A app worker`
    (a user's own worker, which knows nothing of celery-mcp)."""

    def __init__(
        self,
        env: Mapping[str, str],
        hostname: str,
        *,
        queues: str | None = None,
        concurrency: int = 2,
        pool: str = "prefork",
        extra: list[str] | None = None,
        log_dir: Path,
        app: str | None = None,
    ) -> None:
        self.hostname = hostname
        self.log_path = log_dir / f"worker-{hostname.split('@')[0]}.log"
        command = ["celery", "-A", app, "worker", "-E"] if app else ["celery_mcp", "worker"]
        args = [
            sys.executable,
            "-m",
            *command,
            "--hostname",
            hostname,
            "-c",
            str(concurrency),
            "-P",
            pool,
            "-l",
            "INFO",
        ]
        if queues:
            args += ["-Q", queues]
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._log_start = (
            self.log_path.stat().st_size
        )  # an earlier worker of this name wrote before
        self.proc = subprocess.Popen(
            [*args, *(extra or [])],
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> Worker:
        """Wait until the worker logs `ready` (it then consumes and answers control)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.hostname} exited: {self.log()}")
            return b" ready." in self.log_path.read_bytes()[self._log_start :]

        wait_until(ready, timeout_s, 0.1, f"worker {self.hostname} ready")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole worker process group (main process and pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process(self.proc, timeout_s, group=True)
        self._log.close()


def server_params(env: Mapping[str, str], *extra: str) -> StdioServerParameters:
    """How to spawn `celery-mcp serve` over stdio with `env`."""
    return StdioServerParameters(
        command=sys.executable, args=["-m", "celery_mcp", "serve", *extra], env=dict(env)
    )


@contextlib.asynccontextmanager
async def mcp_session(
    env: Mapping[str, str], *extra: str, errlog: Path | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized official-client session with a fresh `celery-mcp serve` process (its
    stderr goes to `errlog`, when given)."""
    with open(errlog or os.devnull, "a") as err:
        async with (
            stdio_client(server_params(env, *extra), errlog=err) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured content."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, f"{tool} failed: {error_text(result)}"
    assert result.structured_content is not None
    return dict(result.structured_content)


async def call_error(session: ClientSession, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; return its error text."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    return error_text(result)


def error_text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def run_cli(env: Mapping[str, str], *args: str, timeout_s: float = 30) -> tuple[int, Any]:
    """Run `python -m celery_mcp ARGS`; return (exit code, parsed JSON stdout or raw text)."""
    proc = subprocess.run(
        [sys.executable, "-m", "celery_mcp", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        return proc.returncode, proc.stdout + proc.stderr


@contextlib.contextmanager
def started_workers(
    env: Mapping[str, str], log_dir: Path, *specs: dict[str, Any]
) -> Iterator[list[Worker]]:
    """Start workers (each spec: Worker kwargs incl. hostname), wait ready, stop them after."""
    workers = [Worker(env, log_dir=log_dir, **spec) for spec in specs]
    try:
        for w in workers:
            w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: What `serve --transport http` prints once it serves.
READY_LINE = "MCP over HTTP at"


class HttpServer:
    """A real `celery-mcp serve --transport http` process on a free port (stdout/stderr kept)."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        tag = f"http-{self.port}"
        self.out_path, self.err_path = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
        self._out, self._err = open(self.out_path, "wb"), open(self.err_path, "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "celery_mcp", "serve", "--transport", "http"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port), *extra],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> HttpServer:
        """Wait for the ready line (fail early if the process exits); the port must then
        accept connections at once: the line is printed only once the server serves."""
        import socket

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.output()}")
            return READY_LINE in self.output()

        wait_until(ready, timeout_s, 0.05, f"HTTP server on port {self.port}")
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", self.port)) == 0, self.output()
        return self

    @property
    def headers(self) -> dict[str, str]:
        """The header the server's start-up line says to send (its generated token)."""
        match = re.search(r"with header '([^:]+): ([^']+)'", self.output())
        return {match.group(1): match.group(2)} if match else {}

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        self._out.flush()
        self._err.flush()
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process(self.proc, timeout_s, group=True)
        self._out.close()
        self._err.close()


@contextlib.contextmanager
def http_server(env: Mapping[str, str], log_dir: Path, *extra: str) -> Iterator[HttpServer]:
    """A started `celery-mcp serve --transport http` process, stopped afterwards."""
    server = HttpServer(env, log_dir, *extra)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def http_session(
    url: str, headers: Mapping[str, str] | None = None, responses: list[Any] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized official-client session over streamable HTTP, with extra `headers`.

    Every HTTP response is appended to `responses` (to check status codes and headers).
    """
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async def record(response: Any) -> None:
        if responses is not None:
            responses.append(response)

    timeout = httpx2.Timeout(30.0, read=120.0)
    hooks = {"response": [record]}
    async with (
        httpx2.AsyncClient(
            headers=dict(headers or {}), timeout=timeout, event_hooks=hooks
        ) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@contextlib.contextmanager
def started_monitor(env: Mapping[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery-mcp monitor` (task-history recorder), ready once it holds its lock."""
    log_path = log_dir / f"monitor-{os.getpid()}-{time.time_ns()}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery_mcp", "monitor", "--log-level", "INFO"],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"monitor exited: {log_path.read_text()[-2000:]}")
            return b"Connected to" in log_path.read_bytes()

        wait_until(ready, 30, 0.1, "monitor recording")
        yield proc
    finally:
        stop_process(proc)


BEAT_SENT = re.compile(r"beat: sent (\S+) \(.*?\) id (\S+), (-?\d+) ms late(?:, attempt (\d+))?")


class Beat:
    """A real `celery-mcp beat` process."""

    def __init__(
        self, env: Mapping[str, str], log_dir: Path, argv: list[str] | None = None
    ) -> None:
        self.log_path = log_dir / f"beat-{time.time_ns()}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, *(argv or ["-m", "celery_mcp", "beat", "-l", "INFO"])],
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def role(self, cluster: Any) -> str | None:
        for beat in cluster.schedules.heartbeats().values():
            if beat.get("pid") == self.proc.pid:
                return str(beat.get("role"))
        return None

    def wait_role(self, cluster: Any, role: str, timeout_s: float = 30.0) -> Beat:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"beat exited: {self.log()}")
            return self.role(cluster) == role

        wait_until(ready, timeout_s, 0.1, f"beat {self.proc.pid} {role}")
        return self

    def sent_delays_ms(self, name: str) -> list[float]:
        return [ms for _, ms, _ in self.sent_runs(name)]

    def sent_runs(self, name: str) -> list[tuple[str, float, int]]:
        """(task id, ms late, publish attempt) of each run of `name` this beat logged sent."""
        return [
            (task_id, float(ms), int(attempt or 1))
            for entry, task_id, ms, attempt in BEAT_SENT.findall(self.text())
            if entry == name
        ]

    def kill(self) -> None:
        """SIGKILL the beat (no lock release, no heartbeat removal: a crash)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def text(self) -> str:
        """Everything the beat logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_process(self.proc, timeout_s, group=True)
        self._log.close()


class Beats:
    """Every beat a test starts; all stopped at the end."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.all: list[Beat] = []

    def start(self, argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> Beat:
        beat = Beat(env or self.env, self.log_dir, argv)
        self.all.append(beat)
        return beat

    def stop_all(self) -> None:
        for beat in self.all:
            beat.stop()


def runs(cluster: Any, name: str) -> list[datetime]:
    """Due times of the runs of `name` that a worker finished (one result per task id)."""
    client = cluster.app.backend.client
    due = []
    for key in client.scan_iter(match=f"celery-task-meta-{name}:2*", count=1000):
        stamp = key.decode().rsplit(":", 1)[1]
        due.append(datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC))
    return sorted(due)


def executions(cluster: Any, key: str) -> int:
    """How many times `demo.flaky(key, 0)` ran (it INCRs a counter per execution)."""
    return int(cluster.app.backend.client.get(f"celery-mcp:demo:flaky:{key}") or 0)
