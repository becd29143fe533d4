"""The seed's own examples, run verbatim: every Python example and CLI line of the specification.

`tests/seed/celery_skill.md` is the skill document this project was built from. Its examples
are the contract a user of the original skill has in their code, so each one is taken from the
document as it is and run, in order, in one namespace (later examples use `skill` and
`task_id` from earlier ones), with only what a user would change: the package name
(`celery_skill` -> `celery_mcp`) and the broker URLs (a private database of the test Valkey,
or a private RabbitMQ node). The tasks they name run on a stock `celery worker` of a user's
app (`tests/apps/seed_tasks.py`); `url`, `data` and `time`, which the document uses without
defining, are given. After each example, a check asserts what the example reads or claims.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.signals import before_task_publish

from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.runtime.worker.retry import backoff_s
from celery_mcp.stores.keys import RETRIES_HEADER, RETRY_DELAY_HEADER, RETRY_DELAY_MAX_HEADER
from tests.rabbit import RabbitNode
from tests.support import ROOT, Worker, wait_until

SEED = ROOT / "tests" / "seed" / "celery_skill.md"
SEED_SHA256 = "5b194b958e332799f0df9abcdbcf115e2120ae7c4a6cd2e37d10e2ca053b7063"
BROKER_DB, BACKEND_DB = 4, 5  # apart from the other tests' queues and results
RABBIT_URL = "amqp://guest:guest@localhost:5672//"  # the seed's RabbitMQ, a private node here


@dataclass(frozen=True)
class Example:
    """One example: a run of lines of a code block, under a heading."""

    heading: str
    index: int  # 1-based, within its heading
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.heading}-{self.index}"


def examples() -> list[Example]:
    """Every python and bash example of the seed, in document order."""
    found: list[Example] = []
    heading, counts = "", dict[str, int]()
    block: list[str] | None = None
    language = ""
    for line in SEED.read_text().splitlines():
        if block is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```") and block is None:
            language, block = line[3:].strip(), []
        elif line.startswith("```") and block is not None:
            if language in ("python", "bash"):
                for chunk in "\n".join(block).split("\n\n"):
                    code = chunk.strip("\n")
                    if any(s.strip() and not s.strip().startswith("#") for s in code.split("\n")):
                        counts[heading] = counts.get(heading, 0) + 1
                        found.append(Example(heading, counts[heading], language, code))
            block = None
        elif block is not None:
            block.append(line)
    return found


EXAMPLES = examples()

#: Headers of every message this process published, by task id (Celery's own publish signal).
PUBLISHED: dict[str, dict[str, Any]] = {}


def _keep_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers and headers.get("id"):
        PUBLISHED[str(headers["id"])] = dict(headers)


before_task_publish.connect(_keep_headers, weak=False)


@dataclass
class Seed:
    """What the examples share: their namespace, the URLs they are pointed at, the worker."""

    broker_url: str
    backend_url: str
    env: dict[str, str]
    data_dir: Path
    worker: Worker
    rabbit: Callable[[], RabbitNode]  # started for the first example that names RabbitMQ
    namespace: dict[str, Any] = field(default_factory=dict)

    def pointed(self, code: str) -> str:
        """The example as a user runs it: our package, the test servers' URLs."""
        code = (
            code.replace("celery_skill", "celery_mcp")
            .replace("redis://localhost:6379/0", self.broker_url)
            .replace("redis://localhost:6379/1", self.backend_url)
        )
        if RABBIT_URL in code:
            code = code.replace(RABBIT_URL, self.rabbit().url)
        return code

    def restart_worker(self, **env: str) -> None:
        """Restart the user's worker (with `env`: on the configuration the next example uses)."""
        self.worker.stop()
        self.env.update(env)
        self.worker = start_worker(self.env, self.data_dir)


def start_worker(env: dict[str, str], data_dir: Path) -> Worker:
    return Worker(
        env,
        "seed@%h",
        app="tests.apps.seed_tasks:app",
        queues="celery,high-priority",
        log_dir=data_dir,
    ).wait_ready()


@pytest.fixture(scope="module")
def seed(
    embedded: EmbeddedServer, env: dict[str, str], data_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Seed]:
    broker, backend = embedded.url_for_db(BROKER_DB), embedded.url_for_db(BACKEND_DB)
    # the seed's first skill keeps results in the broker's database (/0 for both): so does
    # the user's worker
    worker_env = env | {"SEED_BROKER_URL": broker, "SEED_RESULT_BACKEND": broker}
    worker = start_worker(worker_env, data_dir)
    run = Seed(
        broker, backend, worker_env, data_dir, worker, lambda: request.getfixturevalue("rabbit")
    )
    run.namespace.update(url="https://example.com/data.csv", data={"id": 7}, time=time)
    try:
        yield run
    finally:
        skill = run.namespace.get("skill")
        if skill is not None:
            skill.close()
        run.worker.stop()


# -- what each example claims -------------------------------------------------------------

Check = Callable[[Seed, dict[str, Any]], None]


def _result(ns: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
    got: dict[str, Any] = ns["skill"].task_manager().get_result(ns["result"]["task_id"], timeout)
    assert got["success"], got
    return got


def _entry(ns: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = ns["skill"].scheduler().get_periodic_task(name)
    return found


def _basic(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["health"]["ok"] is True and ns["health"]["worker_names"]


def _sent_email(_: Seed, ns: dict[str, Any]) -> None:
    got = _result(ns)
    assert got["result"] == {
        "sent": True,
        "to": "user@example.com",
        "subject": "Welcome!",
        "template": "welcome",
    }
    assert ns["task_id"] == ns["result"]["task_id"]


def _countdown(_: Seed, ns: dict[str, Any]) -> None:
    sent = ns["result"]
    eta = datetime.fromisoformat(sent["eta"])
    assert sent["status"] == "PENDING"
    assert abs((eta - datetime.now(UTC)).total_seconds() - 3600) < 30


def _far_from_utc(_: Seed, ns: dict[str, Any]) -> None:
    """Before the naive-eta example: this process's local time is 8 hours ahead of UTC, so a
    naive time read as UTC would be off by 8 hours."""
    ns["TZ before"] = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()


def _eta(_: Seed, ns: dict[str, Any]) -> None:
    # a naive datetime.now() is local time: the same instant, whatever the zone
    try:
        sent = datetime.fromisoformat(ns["result"]["eta"])
        assert sent == ns["eta"].astimezone(), (sent, ns["eta"])
        assert abs((sent - datetime.now(UTC)).total_seconds() - 1800) < 60, sent
    finally:
        before = ns.pop("TZ before")
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def _expires(_: Seed, ns: dict[str, Any]) -> None:
    expires = datetime.fromisoformat(ns["result"]["expires"])
    assert abs((expires - datetime.now(UTC)).total_seconds() - 3600) < 30
    assert _result(ns)["result"] == "notified"


def _queue_priority(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["result"]["queue"] == "high-priority"
    assert _result(ns)["result"] == {"id": 7, "processed": True}


def _retry_policy(ns: dict[str, Any]) -> list[float]:
    """The delays a celery-mcp worker waits before each retry of the task just sent, read
    from the headers its message was published with (a stock worker runs it once)."""
    headers = PUBLISHED[ns["result"]["task_id"]]
    delay, most = headers[RETRY_DELAY_HEADER], headers[RETRY_DELAY_MAX_HEADER]
    return [backoff_s(n, delay, most) for n in range(headers[RETRIES_HEADER])]


def _retries(_: Seed, ns: dict[str, Any]) -> None:
    assert _retry_policy(ns) == [60, 120, 240]  # retries=3, retry_delay=60 (then doubling)
    assert _result(ns)["result"] == "called"


def _status(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["status"]["status"] == "SUCCESS" and ns["status"]["task_id"] == ns["task_id"]


def _waited_result(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["result"]["success"] is True and ns["result"]["result"]["sent"] is True


def _finished_result(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["result"]["ready"] is True and ns["result"]["status"] == "SUCCESS"
    assert ns["result"]["waited_s"] < 1


def _running(seed: Seed, ns: dict[str, Any]) -> None:
    """Before the revoke examples: `task_id` names a task that runs (so there is something to
    terminate)."""
    task_id = ns["skill"].task_manager().send_task("tasks.slow", args=[60])["task_id"]
    workers = ns["skill"].worker_manager()
    # the user's app does not track STARTED: ask the worker what runs
    wait_until(lambda: task_id in {t["id"] for t in workers.get_active_tasks()["tasks"]}, 15)
    ns["task_id"] = task_id


def _waiting(seed: Seed, ns: dict[str, Any]) -> None:
    """Before revoking a task that has not run: `task_id` names one due in 2 s."""
    ns["task_id"] = ns["skill"].task_manager().send_task("tasks.task1", countdown=2)["task_id"]


def _revoked(_: Seed, ns: dict[str, Any]) -> None:
    tasks = ns["skill"].task_manager()  # it never runs: at its due time the worker drops it
    wait_until(lambda: tasks.get_status(ns["task_id"])["status"] == "REVOKED", 15)


def _terminated(_: Seed, ns: dict[str, Any]) -> None:
    tasks = ns["skill"].task_manager()
    got = tasks.get_result(ns["task_id"], timeout=5)
    assert got["ready"] and got["status"] == "REVOKED", got
    assert "terminated" in str(got["error"]), got  # stopped while it ran, not before


def _inspected(_: Seed, ns: dict[str, Any]) -> None:
    (worker,) = ns["workers"]["workers"]
    assert worker["hostname"].startswith("seed@")
    assert isinstance(worker["active_tasks"], list) and isinstance(worker["stats"]["total"], dict)


def _pinged(_: Seed, ns: dict[str, Any]) -> None:
    (pinged,) = ns["ping"]["active_workers"]
    assert pinged["hostname"].startswith("seed@")


def _active(_: Seed, ns: dict[str, Any]) -> None:
    assert isinstance(ns["active"]["tasks"], list)
    for task in ns["active"]["tasks"]:
        assert {"worker", "name", "id"} <= set(task)


def _registered(_: Seed, ns: dict[str, Any]) -> None:
    assert {"tasks.extract", "myapp.tasks.send_email"} <= set(ns["registered"]["tasks"])


def _pool_processes(ns: dict[str, Any]) -> set[int]:
    (worker,) = ns["skill"].worker_manager().inspect_workers()["workers"]
    return set(worker["stats"]["pool_processes"])


def _before_restart(_: Seed, ns: dict[str, Any]) -> None:
    ns["pids before the restart"] = _pool_processes(ns)


def _pool_restarted(_: Seed, ns: dict[str, Any]) -> None:
    """Each pool process is replaced after its next task: run tasks until all are new."""
    tasks, before = ns["skill"].task_manager(), ns["pids before the restart"]

    def replaced() -> bool:
        for _ in range(4):
            tasks.get_result(tasks.send_task("tasks.task1")["task_id"], timeout=5)
        return not _pool_processes(ns) & before

    wait_until(replaced, 20, 0.1, "new pool processes")


def _shut_down(seed: Seed, ns: dict[str, Any]) -> None:
    wait_until(lambda: seed.worker.proc.poll() is not None, 30, 0.1, "the worker exits")
    seed.restart_worker()  # the examples that follow need a worker


def _chain(_: Seed, ns: dict[str, Any]) -> None:
    url = ns["url"]
    assert ns["result"].get(timeout=15) == 3
    assert [r.get(timeout=5) for r in ns["result"].results] == [
        [url, "row-1", "row-2"],
        [url.upper(), "ROW-1", "ROW-2"],
        3,
    ]


def _group(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["result"].get(timeout=15) == [f"processed img{i}.jpg" for i in (1, 2, 3)]


def _chord(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["result"].get(timeout=15) == ["source1", "source2", "source3"]


def _map(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["result"].get(timeout=15) == 55


def _every_30s(_: Seed, ns: dict[str, Any]) -> None:
    entry = _entry(ns, "health-check-30s")
    assert entry["task_name"] == "tasks.check_health" and entry["schedule"]["every_s"] == 30


def _hourly(_: Seed, ns: dict[str, Any]) -> None:
    entry = _entry(ns, "hourly-cleanup")
    assert entry["schedule"]["every_s"] == 3600 and entry["args"] == ["/tmp"]


def _crontab(name: str, expression: str) -> Check:
    def check(_: Seed, ns: dict[str, Any]) -> None:
        assert _entry(ns, name)["schedule"]["crontab"] == expression

    return check


def _registered_functions(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["send_email"]("a@b", "s", "b") == {"sent": True, "to": "a@b"}


def _registered_tasks(_: Seed, ns: dict[str, Any]) -> None:
    assert {"tasks.send_email", "tasks.process_data"} <= set(ns["skill"].app.tasks)


def _sent_by_name(_: Seed, ns: dict[str, Any]) -> None:
    sent, skill = ns["result"], ns["skill"]
    assert sent["task_name"] == "tasks.send_email" and sent["status"] == "PENDING"
    # a registered function is routed to the facade's own queue, for its start_worker(); until
    # one runs, the send says so
    assert sent["queue"].startswith("celery_mcp.local."), sent
    assert any("start_worker" in w or "no live worker" in w for w in sent["warnings"]), sent
    try:
        skill.start_worker()
        got = skill.task_manager().get_result(sent["task_id"], timeout=15)
        assert got["result"] == {"sent": True, "to": "user@example.com"}, got
    finally:
        skill.close()  # its worker would take the user's tasks from the default queue


def _worker_on_backend_1(seed: Seed, _: dict[str, Any]) -> None:
    """The user's worker keeps results where this skill reads them (`/1`), as a user's does."""
    seed.restart_worker(SEED_RESULT_BACKEND=seed.backend_url)


def _worker_on_rabbit(seed: Seed, _: dict[str, Any]) -> None:
    """The seed's advanced configuration: the user's worker moves to RabbitMQ and rpc://, and
    the examples after this one (retries, workflow results) run there."""
    seed.restart_worker(SEED_BROKER_URL=seed.rabbit().url, SEED_RESULT_BACKEND="rpc://")


def _redis_backend(seed: Seed, ns: dict[str, Any]) -> None:
    health = ns["skill"].health_check()
    assert health["ok"] and health["backend_url"].endswith(f"/{BACKEND_DB}")


def _rpc(_: Seed, ns: dict[str, Any]) -> None:
    health = ns["skill"].health_check()
    assert health["broker"]["ok"] and health["backend_url"] == "rpc://"


def _exponential(_: Seed, ns: dict[str, Any]) -> None:
    assert _retry_policy(ns) == [10, 20, 40, 80, 160]  # what the example's comment says
    assert _result(ns)["result"] == "answered"


def _chain_result(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["final_result"]["success"] and ns["final_result"]["result"] == "input>1>2>3"


def _group_result(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["group_result"].ready()


def _group_results(_: Seed, ns: dict[str, Any]) -> None:
    assert [r.get() for r in ns["group_result"].results] == [1, 2, 3]


def _chord_result(_: Seed, ns: dict[str, Any]) -> None:
    assert ns["chord_result"].get(timeout=15) == ["t1", "t2"]


#: (heading, index) -> (a step before the example, the check after it).
CHECKS: dict[tuple[str, int], tuple[Check | None, Check]] = {
    ("基础用法", 1): (None, lambda _, ns: ns["CelerySkill"]),
    ("基础用法", 2): (None, lambda _, ns: ns["skill"].health_check()),
    ("基础用法", 3): (None, _basic),
    ("发送任务", 1): (None, _sent_email),
    ("发送任务", 2): (None, _countdown),
    ("发送任务", 3): (_far_from_utc, _eta),
    ("发送任务", 4): (None, _expires),
    ("发送任务", 5): (None, _queue_priority),
    ("发送任务", 6): (None, _retries),
    ("查询任务结果", 1): (None, _status),
    ("查询任务结果", 2): (None, _waited_result),
    ("查询任务结果", 3): (None, _finished_result),
    ("撤销任务", 1): (_waiting, _revoked),
    ("撤销任务", 2): (_running, _terminated),
    ("撤销任务", 3): (_running, _terminated),
    ("Worker管理", 1): (None, _inspected),
    ("Worker管理", 2): (None, _pinged),
    ("Worker管理", 3): (None, _active),
    ("Worker管理", 4): (None, _registered),
    ("Worker管理", 5): (_before_restart, _pool_restarted),
    ("Worker管理", 6): (None, _shut_down),
    ("工作流模式", 1): (None, _chain),
    ("工作流模式", 2): (None, _group),
    ("工作流模式", 3): (None, _chord),
    ("工作流模式", 4): (None, _map),
    ("定时任务调度", 1): (None, lambda _, ns: ns["timedelta"]),
    ("定时任务调度", 2): (None, _every_30s),
    ("定时任务调度", 3): (None, _hourly),
    ("定时任务调度", 4): (None, _crontab("daily-report", "0 2 * * *")),
    ("定时任务调度", 5): (None, _crontab("weekly-summary", "0 9 * * 1")),
    ("定时任务调度", 6): (None, _crontab("monthly-cleanup", "0 0 1 * *")),
    ("定时任务调度", 7): (None, _crontab("weekday-polling", "*/15 * * * 1-5")),
    ("注册任务函数", 1): (None, _registered_functions),
    ("注册任务函数", 2): (None, lambda _, ns: ns["process_data"]({"a": 1})["processed"]),
    ("注册任务函数", 3): (None, _registered_tasks),
    ("注册任务函数", 4): (None, _sent_by_name),
    ("任务结果后端配置", 1): (_worker_on_backend_1, _redis_backend),
    ("任务结果后端配置", 2): (_worker_on_rabbit, _rpc),
    ("任务重试策略", 1): (None, _exponential),
    ("工作流结果处理", 1): (None, lambda _, ns: None),  # the chain is read by the next one
    ("工作流结果处理", 2): (None, _chain_result),
    ("工作流结果处理", 3): (None, lambda _, ns: None),  # the group is read by the next ones
    ("工作流结果处理", 4): (None, _group_result),
    ("工作流结果处理", 5): (None, _group_results),
    ("工作流结果处理", 6): (None, _chord_result),
}


def test_every_example_has_a_check() -> None:
    python = {(e.heading, e.index) for e in EXAMPLES if e.language == "python"}
    assert python == set(CHECKS), python ^ set(CHECKS)
    assert len(python) == 45 and len(_cli_lines()) == 5
    assert {shlex.split(line)[4] for line in _cli_lines()} == set(CLI_CHECKS)


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.language == "python"], ids=lambda e: e.id
)
def test_python_example(seed: Seed, example: Example) -> None:
    before, check = CHECKS[(example.heading, example.index)]
    code = seed.pointed(example.code)
    if before is not None:
        before(seed, seed.namespace)
    exec(compile(code, f"<seed {example.id}>", "exec"), seed.namespace)  # noqa: S102
    check(seed, seed.namespace)


def _cli_lines() -> list[str]:
    return [
        line
        for e in EXAMPLES
        if e.language == "bash"
        for line in e.code.splitlines()
        if line.startswith("python -m")
    ]


def _cli_sent(seed: Seed, out: dict[str, Any]) -> None:
    assert out["task_name"] == "tasks.email" and out["status"] == "PENDING"
    reader = Celery("reader", broker=seed.broker_url, backend=seed.backend_url)
    try:
        result = reader.AsyncResult(out["task_id"])
        assert result.get(timeout=15) == "sent 'Hello' to user@example.com"
    finally:
        reader.close()


def _cli_unknown_id(_: Seed, out: dict[str, Any]) -> None:
    # an id nobody sent: answered at once, not ready, and said to be unknown
    assert out["task_id"] == "abc-123-def" and out["status"] == "PENDING" and not out["ready"]
    assert "unknown" in out["note"].lower() or "never" in out["note"].lower(), out


def _cli_inspected(_: Seed, out: dict[str, Any]) -> None:
    assert [w["hostname"].split("@")[0] for w in out["workers"]] == ["seed"], out


def _cli_pinged(_: Seed, out: dict[str, Any]) -> None:
    assert [w["hostname"].split("@")[0] for w in out["active_workers"]] == ["seed"], out


def _cli_health(_: Seed, out: dict[str, Any]) -> None:
    assert out["ok"] is True and out["broker"]["ok"] and out["workers"]["ok"], out


#: The seed's `--action` -> what its output must say.
CLI_CHECKS: dict[str, Callable[[Seed, dict[str, Any]], None]] = {
    "send_task": _cli_sent,
    "get_result": _cli_unknown_id,
    "inspect_workers": _cli_inspected,
    "ping": _cli_pinged,
    "health": _cli_health,
}


@pytest.mark.parametrize("line", _cli_lines(), ids=lambda line: shlex.split(line)[4])
def test_cli_line(seed: Seed, line: str) -> None:
    """The seed's CLI lines with `python -m celery_mcp`, on the same broker (env settings)."""
    if seed.env["SEED_BROKER_URL"] != seed.broker_url:  # the Python examples ended on RabbitMQ
        seed.restart_worker(SEED_BROKER_URL=seed.broker_url, SEED_RESULT_BACKEND=seed.backend_url)
    args = shlex.split(line)[3:]  # after `python -m celery_skill`
    env = seed.env | {
        "CELERY_MCP_BROKER_URL": seed.broker_url,
        "CELERY_MCP_RESULT_BACKEND": seed.backend_url,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "celery_mcp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    CLI_CHECKS[args[1]](seed, json.loads(proc.stdout))


def test_examples_are_the_documents() -> None:
    """The examples above are read from the seed document itself (nothing retyped)."""
    text = SEED.read_text()
    assert all(e.code in text for e in EXAMPLES)
    assert re.search(r"skill = CelerySkill\(", text)


def test_the_seed_document_is_the_original() -> None:
    """Byte for byte what the spec's author wrote (no formatter may touch it)."""
    import hashlib

    digest = hashlib.sha256(SEED.read_bytes()).hexdigest()
    assert digest == SEED_SHA256, digest
