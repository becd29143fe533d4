"""Every operation belongs to a known toolset; selection honours toolsets and read-only."""

from __future__ import annotations

from celery_mcp.config import DEFAULT_TOOLSETS, TOOLSETS, Settings
from celery_mcp.service.funnel import signature_matches
from celery_mcp.service.registry import OPERATIONS, offered
from tests.toolset_contract import DEFAULT_MAX_TOOLS, TOOLSET_TOOLS


def test_every_operation_is_in_a_known_toolset() -> None:
    for op in OPERATIONS.values():
        assert op.toolset in TOOLSETS, op.name


def test_registry_matches_the_toolset_contract() -> None:
    actual: dict[str, set[str]] = {}
    for op in OPERATIONS.values():
        actual.setdefault(op.toolset, set()).add(op.name)
    assert actual == {k: v for k, v in TOOLSET_TOOLS.items() if v}


def test_default_toolsets_stay_small() -> None:
    names = {op.name for op in offered(Settings(), "mcp")}
    assert len(names) <= DEFAULT_MAX_TOOLS
    assert names == set().union(*(TOOLSET_TOOLS[t] for t in DEFAULT_TOOLSETS))


def test_read_only_selection_has_no_state_changing_operation() -> None:
    ops = offered(Settings(toolsets="all", read_only=True), "mcp")
    assert ops and all(op.read_only and not op.destructive for op in ops)


def test_destructive_operations_are_not_read_only() -> None:
    for op in OPERATIONS.values():
        assert not (op.destructive and op.read_only), op.name


def test_descriptions_are_short_and_present() -> None:
    for op in OPERATIONS.values():
        assert 20 <= len(op.description) <= 300, (op.name, len(op.description))


def test_every_implementation_takes_the_tables_models() -> None:
    assert [op.name for op in OPERATIONS.values() if not signature_matches(op)] == []
