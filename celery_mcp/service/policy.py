"""Policy: which operations a front end offers, and which tasks may be sent.

Every front end (MCP server, Python API, CLI) reaches an operation through
`funnel.prepare`, which applies `check_operation`; every path that publishes a task applies
`check_task_allowed` (see `sending.ensure_sendable`). So a setting means the same everywhere:

- read-only mode (`read_only`): no operation that changes state runs;
- toolsets (`toolsets`): an operation outside them is not offered. Unset, the MCP server offers
  its small default (`config.DEFAULT_TOOLSETS`: agents see every tool on every turn) and the
  Python API and CLI offer every toolset;
- task allowlist (`task_allow`): only task names matching its glob patterns may be sent,
  scheduled or used in a workflow (a scheduled entry is checked again before each run);
- confirm: a destructive operation without `confirm` is a dry run that says what it would do,
  for agents (MCP) and the CLI. In Python the call is the confirmation (`skill.worker_manager()
  .shutdown_workers()` shuts workers down, as the seed's examples expect); pass `confirm=False`
  there for a dry run.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, Literal

from celery_mcp.config import DEFAULT_TOOLSETS, TOOLSETS, Settings
from celery_mcp.errors import Forbidden

FrontEnd = Literal["mcp", "python", "cli"]

#: How to turn a toolset on, per front end.
_ENABLE = {
    "mcp": "start the server with CELERY_MCP_TOOLSETS={toolsets} (or --toolsets all)",
    "python": "pass toolsets={toolsets!r} (or 'all') to CelerySkill, or leave toolsets unset",
    "cli": "pass --toolsets {toolsets} (or all), or leave CELERY_MCP_TOOLSETS unset",
}


def enabled_toolsets(settings: Settings, front_end: FrontEnd) -> tuple[str, ...]:
    """The toolsets `front_end` offers under `settings` (health is always among them)."""
    if settings.toolsets is not None:
        return settings.toolsets
    return DEFAULT_TOOLSETS if front_end == "mcp" else TOOLSETS


def offers(settings: Settings, toolset: str, read_only: bool, front_end: FrontEnd) -> bool:
    """True when `front_end` offers an operation of `toolset` (that changes state or not)."""
    return toolset in enabled_toolsets(settings, front_end) and (
        read_only or not settings.read_only
    )


def check_operation(
    settings: Settings, name: str, toolset: str, read_only: bool, front_end: FrontEnd
) -> None:
    """Raise Forbidden, saying how to allow it, when `front_end` does not offer `name`."""
    if not read_only and settings.read_only:
        raise Forbidden(
            f"{name} changes state and this server is read-only",
            hint="read-only mode (CELERY_MCP_READ_ONLY) allows only tools that read",
        )
    enabled = enabled_toolsets(settings, front_end)
    if toolset not in enabled:
        wanted = ",".join(dict.fromkeys((*enabled, toolset)))
        raise Forbidden(
            f"{name} is in the {toolset!r} toolset, which is not enabled "
            f"(enabled: {', '.join(enabled)})",
            hint=_ENABLE[front_end].format(toolsets=wanted),
        )


def with_defaults(
    front_end: FrontEnd, field_names: Mapping[str, Any], fields: Mapping[str, Any]
) -> Mapping[str, Any]:
    """`fields` with the front end's defaults: confirm=True in Python unless given."""
    if front_end == "python" and "confirm" in field_names and "confirm" not in fields:
        return {**fields, "confirm": True}
    return fields


def task_allowed(settings: Settings, name: str) -> bool:
    """True when no allowlist is set or `name` matches one of its glob patterns."""
    return not settings.task_allow or any(fnmatchcase(name, p) for p in settings.task_allow)


def check_task_allowed(settings: Settings, name: str) -> None:
    """Raise Forbidden when the task allowlist is set and `name` matches none of it."""
    if not task_allowed(settings, name):
        raise Forbidden(
            f"task {name!r} is not in the task allowlist ({', '.join(settings.task_allow)})",
            hint="send a task matching one of these patterns, or ask the operator to extend "
            "CELERY_MCP_TASK_ALLOW",
        )
