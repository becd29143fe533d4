"""A bare MCPServer: the SDK's own per-call cost over stdio, as a floor.

`noop` is async, returns a small pydantic model (structured output, like every celery_mcp tool)
and hops to a worker thread once (like celery_mcp's tool wrapper), so the difference between a
celery_mcp tool and it is what celery_mcp adds, plus the raw Celery call. The other tools make
that raw Celery call themselves (the bench's raw one, on the app `make_app` builds from the
same settings), in the same worker thread: what any MCP server on the SDK's stdio pays to do
the same work in its process; the difference between a celery_mcp tool and its twin here is
what celery_mcp's own code adds.

`wait(ms)` only sleeps in its worker thread: the SDK's cost of a call whose tool takes as long
as a raw Celery round trip. The no-op floor is measured hot, back to back; after a few ms of
waiting, the processes and caches of the call's path have gone cold, and a call costs more.

Run: python -m bench.floor_server [--tight-timers]  (speaks MCP on stdin/stdout;
CELERY_MCP_DATA_DIR for the broker of the Celery tools; --tight-timers sets the 1 ns timer slack
`celery-mcp serve` runs with, so its waits and sleeps end on time as ours do)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel


class Done(BaseModel):
    ok: bool


@cache
def app() -> Any:
    # imported here: this server is also the floor of the cold-start rows, which must not
    # pay for importing Celery (no celery_mcp server imports it before the first call either)
    from celery_mcp.app import make_app
    from celery_mcp.config import Settings
    from celery_mcp.runtime.embedded import resolve

    return make_app(resolve(Settings()))


async def _in_thread(work: Callable[[], object]) -> Done:
    """`work()` in one of anyio's worker threads, as the no-op tool hops to one."""
    await anyio.to_thread.run_sync(work)
    return Done(ok=True)


def build() -> MCPServer:
    server: MCPServer = MCPServer(name="floor", log_level="WARNING")

    @server.tool()
    async def noop() -> Done:
        """Do nothing in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: Done(ok=True))

    @server.tool()
    async def send(task_name: str, queue: str | None = None) -> Done:
        """app.send_task(task_name, queue=queue) in a worker thread."""
        return await _in_thread(lambda: app().send_task(task_name, queue=queue))

    @server.tool()
    async def send_and_wait(task_name: str) -> Done:
        """app.send_task(task_name).get() in a worker thread."""
        return await _in_thread(lambda: app().send_task(task_name).get(timeout=10))

    @server.tool()
    async def wait(ms: float) -> Done:
        """time.sleep(ms / 1000) in a worker thread."""
        return await _in_thread(lambda: time.sleep(ms / 1e3))

    @server.tool()
    async def get(task_id: str) -> Done:
        """AsyncResult(task_id).get() in a worker thread."""
        return await _in_thread(lambda: app().AsyncResult(task_id).get(timeout=10))

    return server


if __name__ == "__main__":
    if "--tight-timers" in sys.argv:  # not for the cold-start floor: it would import ctypes
        from celery_mcp.runtime.timer_slack import tighten

        tighten()
    build().run("stdio")
