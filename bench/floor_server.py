"""A bare MCPServer with one no-op tool: the SDK's own per-call cost over stdio, as a floor.

The tool is async, returns a small pydantic model (structured output, like every celery_mcp
tool) and hops to a worker thread once (like celery_mcp's tool wrapper), so the difference
between a celery_mcp tool and this one is what celery_mcp itself adds.

Run: python -m bench.floor_server  (speaks MCP on stdin/stdout)
"""

from __future__ import annotations

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel


class Done(BaseModel):
    ok: bool


def build() -> MCPServer:
    server: MCPServer = MCPServer(name="floor", log_level="WARNING")

    @server.tool()
    async def noop() -> Done:
        """Do nothing in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: Done(ok=True))

    return server


if __name__ == "__main__":
    build().run("stdio")
