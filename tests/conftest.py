"""Session fixtures: one embedded Valkey, one demo worker, MCP sessions over real stdio."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import ClientSession

from celery_mcp.config import Settings
from celery_mcp.runtime.embedded import EmbeddedServer, ensure_running, resolve, stop
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.schedules import get_store
from tests.rabbit import RabbitNode, install_if_missing, private_rabbit
from tests.support import Beats, Worker, mcp_session

XDG_HOME = pytest.StashKey[Path]()

#: The modules that take longest (over a minute each), handed out first: with two test
#: processes (pytest-xdist, one module per process at a time) a long module started last
#: leaves the other process idle for its whole length.
LONGEST_FIRST = ("test_schedule_delivery.py", "test_schedules.py", "test_faults.py")


def pytest_configure(config: pytest.Config) -> None:
    """No test touches the user's own data dir: a skill or CLI run without one (the seed's
    rpc:// example keeps its state in the embedded Valkey) gets this test process's own."""
    home = Path(tempfile.mkdtemp(prefix="celery-mcp-tests-xdg-"))
    os.environ["XDG_DATA_HOME"] = str(home)
    config.stash[XDG_HOME] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(XDG_HOME, None)
    if home is not None:
        stop(home / "celery-mcp")  # an embedded Valkey started there, if any
        shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("celery-mcp-data")


@pytest.fixture(scope="session")
def env(data_dir: Path) -> dict[str, str]:
    """Environment for child processes: only this test session's settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")}
    return clean | {"CELERY_MCP_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def embedded(data_dir: Path) -> Iterator[EmbeddedServer]:
    server = ensure_running(data_dir)
    yield server
    stop(data_dir)


@pytest.fixture(scope="session")
def settings(data_dir: Path, embedded: EmbeddedServer) -> Settings:
    return resolve(Settings(data_dir=data_dir))


@pytest.fixture(scope="session")
def cluster(settings: Settings) -> Cluster:
    return Cluster(settings)


@pytest.fixture(scope="session")
def worker(env: dict[str, str], embedded: EmbeddedServer, data_dir: Path) -> Iterator[Worker]:
    """The demo worker `w1@%h` on the default queue (prefork, 4 processes)."""
    w = Worker(env, "w1@%h", concurrency=4, log_dir=data_dir).wait_ready()
    yield w
    w.stop()


@pytest.fixture(scope="module")
async def mcp(env: dict[str, str], worker: Worker) -> AsyncIterator[ClientSession]:
    """An MCP session (official client, stdio) with the demo worker running."""
    async with mcp_session(env) as session:
        yield session


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private RabbitMQ node (installed first where the tests may: CI), stopped after."""
    why_not = install_if_missing()
    if why_not and os.environ.get("CELERY_MCP_REQUIRE_RABBITMQ"):  # CI: a skip would hide it
        pytest.fail(why_not)
    if why_not:
        pytest.skip(why_not)
    with private_rabbit(tmp_path_factory.mktemp("rabbit")) as node:
        yield node


@pytest.fixture(scope="module")
def beats(env: dict[str, str], embedded: EmbeddedServer, data_dir: Path) -> Iterator[Beats]:
    """The `celery-mcp beat` processes a module starts, all stopped after it."""
    group = Beats(env, data_dir)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def remove_new_entries(cluster: Cluster) -> Iterator[None]:
    """Leave the session's schedule store as the module found it."""
    store = get_store(cluster)
    before = set(store.client.zrange(store.schedule_key, 0, -1))
    yield
    for key in set(store.client.zrange(store.schedule_key, 0, -1)) - before:
        store.client.zrem(store.schedule_key, key)
        store.client.delete(key)
