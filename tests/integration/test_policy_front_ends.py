"""One policy, three front ends: the MCP server, `CelerySkill` and the CLI refuse the same calls
under the same settings (read-only mode, toolsets, the task allowlist), each with `forbidden`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_mcp import CelerySkill
from celery_mcp.errors import Forbidden
from celery_mcp.runtime.embedded import EmbeddedServer
from tests.support import call_error, mcp_session, run_cli

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("embedded")]

#: (setting name, environment value, facade value)
POLICIES: dict[str, tuple[str, str, Any]] = {
    "read_only": ("CELERY_MCP_READ_ONLY", "true", True),
    "toolsets": ("CELERY_MCP_TOOLSETS", "tasks,health", ("tasks", "health")),
    "task_allow": ("CELERY_MCP_TASK_ALLOW", "demo.add", ("demo.add",)),
}

#: Per policy: calls refused by all three front ends (operation, fields).
REFUSED: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "read_only": [
        ("purge_queue", {"queue": "policy-q", "confirm": True}),
        ("send_task", {"task_name": "demo.add", "args": [1, 2], "queue": "policy-q"}),
        ("revoke", {"task_id": "00000000-0000-0000-0000-000000000000", "confirm": True}),
    ],
    "toolsets": [
        ("inspect_workers", {}),
        ("purge_queue", {"queue": "policy-q", "confirm": True}),
    ],
    "task_allow": [
        ("send_task", {"task_name": "demo.fail", "queue": "policy-q"}),
        ("chain_tasks", {"steps": [{"task_name": "demo.fail", "queue": "policy-q"}]}),
    ],
}


def _cli_flags(fields: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for key, value in fields.items():
        text = json.dumps(value) if not isinstance(value, str) else value
        flags += [f"--{key.replace('_', '-')}", text.lower() if isinstance(value, bool) else text]
    return flags


@pytest.mark.parametrize("policy", sorted(POLICIES))
async def test_every_front_end_refuses_the_same_calls(
    policy: str, env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    variable, env_value, facade_value = POLICIES[policy]
    policed = env | {variable: env_value}
    extra = () if policy == "toolsets" else ("--toolsets", "all")
    async with mcp_session(policed, *extra) as session:
        for name, fields in REFUSED[policy]:
            text = await call_error(session, name, **fields)
            assert "forbidden:" in text, (name, text)
    skill = CelerySkill(data_dir=str(data_dir), **{policy: facade_value})
    try:
        for name, fields in REFUSED[policy]:
            with pytest.raises(Forbidden):
                skill._call(name, **fields)
    finally:
        skill.close()
    for name, fields in REFUSED[policy]:
        rc, out = run_cli(policed, "--action", name, *_cli_flags(fields))
        assert rc != 0 and out["error"]["code"] == "forbidden", (name, rc, out)
    broker = redis.Redis.from_url(embedded.url_for_db(0), socket_timeout=5)
    assert broker.llen("policy-q") == 0  # nothing was published by anyone
    broker.close()
