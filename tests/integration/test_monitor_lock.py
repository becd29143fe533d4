"""The monitor's recorder lock under load: real `celery-mcp monitor` processes, real events.

Publisher processes (a plain Celery app, `app.events.Dispatcher`) send synthetic task events
on broker databases of their own, faster than one monitor writes them. The lock (its TTL cut
with CELERY_MCP_MONITOR_LOCK_TTL_S) must stay with the recording monitor, renewed on time,
while a second monitor stands by and never records; a recorder whose lock is taken stops
writing at once.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.stores.keys import HISTORY_PREFIX
from tests.support import ROOT, stop_process, wait_until

BROKER_DB, BACKEND_DB = 40, 41  # apart from the other tests' queues, events and history
TTL_S = 1.5
LOCK = HISTORY_PREFIX + "lock"
META = HISTORY_PREFIX + "meta"
SENT = "lockbench:sent"  # events published so far (counted by the publishers)
STOP = "lockbench:stop"  # set: the publishers finish
CHUNK = 300


def publish(broker: str) -> None:
    """Publish task-sent/started/succeeded events of fresh ids until STOP is set (a process)."""
    client = redis.Redis.from_url(broker)
    app = Celery("lockbench", broker=broker)
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(
            conn, hostname="lockbench@test", enabled=True, buffer_while_offline=False
        )
        while not client.exists(STOP):
            for _ in range(CHUNK // 3):
                tid = uuid.uuid4().hex
                dispatcher.send(
                    "task-sent", uuid=tid, name="lockbench.noop", args="()", kwargs="{}"
                )
                dispatcher.send("task-started", uuid=tid)
                dispatcher.send("task-succeeded", uuid=tid, result="None", runtime=0.001)
            client.incrby(SENT, CHUNK)


@contextlib.contextmanager
def publishers(broker: str, count: int) -> Iterator[None]:
    """`count` publisher processes, running until the block ends (then every count is in)."""
    code = f"from tests.integration.test_monitor_lock import publish; publish({broker!r})"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        redis.Redis.from_url(broker).set(STOP, 1)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                stop_process(proc)


@dataclass
class Monitor:
    """A `celery-mcp monitor` process and its log."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float = 30) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None, f"monitor exited: {self.log()[-3000:]}"
            return text in self.log()

        wait_until(seen, timeout_s, 0.05, f"monitor log: {text!r}")


@contextlib.contextmanager
def monitor(env: dict[str, str], log_dir: Path, tag: str) -> Iterator[Monitor]:
    log_path = log_dir / f"monitor-lock-{tag}-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery_mcp", "monitor", "--log-level", "INFO"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield Monitor(proc, log_path)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def isolated(embedded: EmbeddedServer, env: dict[str, str]) -> Iterator[tuple[Any, dict[str, str]]]:
    """(client of the broker db, monitor env) on databases no other test uses; emptied after."""
    broker, backend = embedded.url_for_db(BROKER_DB), embedded.url_for_db(BACKEND_DB)
    clients = [redis.Redis.from_url(u, decode_responses=True) for u in (broker, backend)]
    for c in clients:
        c.flushdb()
    menv = env | {
        "CELERY_MCP_BROKER_URL": broker,
        "CELERY_MCP_RESULT_BACKEND": backend,
        "CELERY_MCP_MONITOR_LOCK_TTL_S": str(TTL_S),
    }
    try:
        yield clients[0], menv
    finally:
        for c in clients:
            c.flushdb()
            c.close()


def counts(client: Any) -> tuple[int, int]:
    """(events published, events the history recorded)."""
    sent, recorded = client.get(SENT), client.hget(META, "events")
    return int(sent or 0), int(recorded or 0)


def test_the_lock_stays_with_the_recorder_while_it_drains_a_growing_backlog(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    with isolated(embedded, env) as (client, menv), monitor(menv, data_dir, "active") as active:
        active.wait_log("Connected to")
        token = client.get(LOCK)
        assert token, active.log()
        holders: set[str | None] = set()
        renewals: list[float] = []  # when the lock's TTL went back up
        backlog: list[int] = []  # published - recorded, sampled
        started = time.monotonic()
        with publishers(menv["CELERY_MCP_BROKER_URL"], 2), monitor(menv, data_dir, "b") as standby:
            standby.wait_log("standing by")
            last_pttl = TTL_S * 1000
            until = time.monotonic() + 6 * TTL_S
            while time.monotonic() < until:
                pipe = client.pipeline(transaction=False)
                pipe.get(LOCK)
                pipe.pttl(LOCK)
                holder, pttl = pipe.execute()
                holders.add(holder)
                if pttl > last_pttl:
                    renewals.append(time.monotonic())
                last_pttl = pttl
                sent, recorded = counts(client)
                backlog.append(sent - recorded)
                time.sleep(0.02)
            standby_log = standby.log()
        elapsed = time.monotonic() - started
        sent, recorded = counts(client)
        gaps = [b - a for a, b in zip(renewals, renewals[1:], strict=False)]
        print(
            f"\nevents published: {sent} in {elapsed:.1f}s ({sent / elapsed:.0f}/s), recorded "
            f"{recorded} by then; backlog max {max(backlog)}, at end {sent - recorded}; "
            f"renewals {len(renewals)}, gaps {min(gaps, default=0):.2f}-"
            f"{max(gaps, default=0):.2f}s (ttl {TTL_S}s)"
        )
        assert holders == {token}, f"the lock changed hands: {holders}\n{active.log()}"
        assert "recording task history" not in standby_log, standby_log
        assert client.hget(META, "pid") == str(active.proc.pid)
        assert max(backlog) > 2 * CHUNK, backlog  # fed faster than it wrote
        assert gaps and max(gaps) < TTL_S / 2, gaps  # every TTL/3, a little late at most
        wait_until(lambda: counts(client)[1] >= sent, 120, 0.2, "the backlog written")
        assert client.get(LOCK) == token


def test_a_recorder_whose_lock_is_taken_stops_writing_and_stands_by(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    with isolated(embedded, env) as (client, menv), monitor(menv, data_dir, "active") as active:
        active.wait_log("Connected to")
        with publishers(menv["CELERY_MCP_BROKER_URL"], 1):
            wait_until(lambda: counts(client)[1] > 0, 30, 0.05, "events recorded")
            client.set(LOCK, "another-monitor", px=60_000)  # as if another took it over
            taken = time.monotonic()
            seen = [(taken, counts(client)[1])]
            while time.monotonic() - seen[-1][0] < 0.5:  # until no write for 0.5 s
                assert time.monotonic() - taken < 3 * TTL_S, "it kept writing without the lock"
                time.sleep(0.05)
                recorded = counts(client)[1]
                if recorded != seen[-1][1]:
                    seen.append((time.monotonic(), recorded))
            time.sleep(3 * TTL_S)  # events keep coming meanwhile
            sent, recorded = counts(client)
        print(f"\nlast write {seen[-1][0] - taken:.2f}s after the lock was taken")
        assert recorded == seen[-1][1] < sent, (seen, recorded, sent)
        assert seen[-1][0] - taken < TTL_S / 3 + 0.5  # the next renewal found out
        active.wait_log("standing by: another monitor records")
        assert client.get(LOCK) == "another-monitor"
        client.delete(LOCK)  # the other one is gone: this monitor records again
        wait_until(lambda: active.log().count("recording task history") == 2, 10, 0.1)
        assert client.get(LOCK) not in (None, "another-monitor")
