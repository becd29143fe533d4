"""Size of `tools/list` (bytes of JSON) and tool count for the default toolsets and for `all`.

Run: python -m bench.tool_list
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def measure(extra: list[str], env: dict[str, str]) -> tuple[int, int]:
    """(tool count, bytes of the tools array as JSON) of one server configuration."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "celery_mcp", "serve", *extra], env=env
    )
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = (await session.list_tools()).tools
    dumped = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]
    return len(tools), len(json.dumps(dumped, separators=(",", ":")))


async def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")}
        env["CELERY_MCP_DATA_DIR"] = data
        print(f"{'toolsets':<10} {'tools':>5} {'tools/list bytes':>17}")
        for label, extra in (("default", []), ("all", ["--toolsets", "all"])):
            count, size = await measure(extra, env)
            print(f"{label:<10} {count:>5} {size:>17,}")
        from pathlib import Path

        from celery_mcp.runtime.embedded import stop

        stop(Path(data))


if __name__ == "__main__":
    anyio.run(main)
