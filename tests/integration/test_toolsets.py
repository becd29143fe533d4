"""Toolsets over the real MCP client: default list, each toolset, all, read-only, bad names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mcp import ClientSession

from celery_mcp.config import DEFAULT_TOOLSETS
from tests.support import mcp_session
from tests.toolset_contract import DEFAULT_MAX_LIST_BYTES, DEFAULT_MAX_TOOLS, TOOLSET_TOOLS

pytestmark = pytest.mark.anyio


async def _tools(session: ClientSession) -> dict[str, object]:
    return {t.name: t for t in (await session.list_tools()).tools}


def _list_bytes(tools: dict[str, object]) -> int:
    """Bytes of the tools array as JSON on the wire (compact, as the SDK serializes it)."""
    dumped = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools.values()]  # type: ignore[attr-defined]
    return len(json.dumps(dumped, separators=(",", ":")))


async def test_default_tool_list_is_small(env: dict[str, str]) -> None:
    async with mcp_session(env) as session:
        tools = await _tools(session)
    expected = set().union(*(TOOLSET_TOOLS[t] for t in DEFAULT_TOOLSETS))
    assert set(tools) == expected
    assert len(tools) <= DEFAULT_MAX_TOOLS
    assert _list_bytes(tools) < DEFAULT_MAX_LIST_BYTES


@pytest.mark.parametrize("toolset", [t for t in TOOLSET_TOOLS if t != "health"])
async def test_each_toolset_adds_exactly_its_tools(env: dict[str, str], toolset: str) -> None:
    async with mcp_session(env | {"CELERY_MCP_TOOLSETS": toolset}) as session:
        tools = await _tools(session)
    assert set(tools) == TOOLSET_TOOLS[toolset] | TOOLSET_TOOLS["health"]


async def test_all_lists_every_tool(env: dict[str, str]) -> None:
    async with mcp_session(env, "--toolsets", "all") as session:
        tools = await _tools(session)
    assert set(tools) == set().union(*TOOLSET_TOOLS.values())


async def test_read_only_with_toolsets_lists_no_state_changing_tool(env: dict[str, str]) -> None:
    async with mcp_session(env, "--toolsets", "all", "--read-only") as session:
        tools = await _tools(session)
    assert tools
    for name, tool in tools.items():
        annotations = tool.annotations  # type: ignore[attr-defined]
        assert annotations.read_only_hint is True, name
        assert not annotations.destructive_hint, name
    assert "send_task" not in tools and "get_result" in tools


def test_unknown_toolset_fails_at_start_with_a_clear_message(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celery_mcp", "serve", "--toolsets", "tasks,nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "unknown toolset(s) nope" in proc.stderr and "choose from" in proc.stderr
