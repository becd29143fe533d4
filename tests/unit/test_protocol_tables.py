"""The tables behind resources, prompts and completions match the registry and its policy."""

from __future__ import annotations

import re
from typing import Any

import pytest
from mcp.shared.uri_template import UriTemplate

from celery_mcp.config import Settings
from celery_mcp.errors import Forbidden
from celery_mcp.interfaces.mcp.prompts import PROCEDURES, offered_procedures, render
from celery_mcp.interfaces.mcp.protocol import (
    ENTRY_TEMPLATE,
    LINKED_FIELDS,
    _links,
    backend_publishes,
)
from celery_mcp.service.registry import OPERATIONS
from celery_mcp.service.suggestions import SOURCES, matching
from celery_mcp.service.views import VIEWS, offered_views, prepare_view

SAMPLE = {
    "task_name": "demo.add",
    "within_hours": "2",
    "extract_task": "etl.extract",
    "transform_task": "etl.transform",
    "load_task": "etl.load",
    "source": "s3://bucket/day.csv",
    "cron": "0 6 * * mon-fri",
    "timezone": "Europe/Paris",
    "name": "daily-report",
    "queue": "billing",
}


def test_views_are_read_only_operations_whose_variables_are_input_fields() -> None:
    assert len({v.uri for v in VIEWS}) == len(VIEWS)
    for view in VIEWS:
        assert set(UriTemplate.parse(view.uri).variable_names) == set(view.variables), view.uri
        for part in view.parts.values():
            op = OPERATIONS[part.operation]
            assert op.read_only, view.uri
            assert set(part.fields) <= set(op.input_model.model_fields), view.uri
        fields = OPERATIONS[view.main.operation].input_model.model_fields
        for field, kind in view.variables.values():
            assert field in fields and kind in SOURCES, view.uri


def test_views_follow_the_toolsets() -> None:
    default = {v.uri for v in offered_views(Settings())}
    assert default == {
        "celery://cluster",
        "celery://workers",
        "celery://queues",
        "celery://catalog",
        "celery://tasks/{task_id}",
        "celery://catalog/{task_name}",
    }
    assert {v.uri for v in offered_views(Settings(toolsets="health"))} == {"celery://cluster"}
    everything = offered_views(Settings(toolsets="all", read_only=True))
    assert {v.uri for v in everything} == {v.uri for v in VIEWS}


def test_the_cluster_view_leaves_out_parts_of_disabled_toolsets() -> None:
    (cluster,) = [v for v in VIEWS if v.uri == "celery://cluster"]
    assert set(prepare_view(cluster, Settings(toolsets="health"), {})) == {"health"}
    assert set(prepare_view(cluster, Settings(), {})) == {"health", "queues", "recent_failures"}


def test_a_view_goes_through_the_funnel() -> None:
    (task,) = [v for v in VIEWS if v.uri == "celery://tasks/{task_id}"]
    (call,) = prepare_view(task, Settings(), {"task_id": "abc"}).values()
    assert call.op.name == "get_status" and call.request.model_dump()["task_id"] == "abc"
    with pytest.raises(Forbidden, match="tasks"):
        prepare_view(task, Settings(toolsets="health"), {"task_id": "abc"})


def _mentioned_operations(text: str) -> set[str]:
    return {name for name in OPERATIONS if re.search(rf"\b{name}\b", text)}


@pytest.mark.parametrize("procedure", PROCEDURES, ids=lambda p: p.name)
def test_prompts_mention_only_the_operations_they_declare(procedure: Any) -> None:
    values = {a.name: SAMPLE[a.name] for a in procedure.arguments}
    text = render(procedure, Settings(toolsets="all"), values)
    assert _mentioned_operations(text) <= set(procedure.needs) | set(procedure.writes)
    assert set(procedure.needs) <= _mentioned_operations(text)


def test_read_only_prompts_drop_state_changing_steps() -> None:
    settings = Settings(toolsets="all", read_only=True)
    names = {p.name for p in offered_procedures(settings)}
    assert names == {"triage_failures", "investigate_stuck_queue"}
    for procedure in offered_procedures(settings):
        values = {a.name: SAMPLE[a.name] for a in procedure.arguments}
        mentioned = _mentioned_operations(render(procedure, settings, values))
        assert all(OPERATIONS[n].read_only for n in mentioned), procedure.name


def test_prompt_arguments_are_checked() -> None:
    (triage,) = [p for p in PROCEDURES if p.name == "triage_failures"]
    with pytest.raises(ValueError, match="unknown argument"):
        render(triage, Settings(), {"task": "x"})
    with pytest.raises(ValueError, match="within_hours must be a number"):
        render(triage, Settings(), {"within_hours": "a day"})
    assert "within_s=86400" in render(triage, Settings(), {})


def test_matching_puts_prefixes_first_and_counts_all() -> None:
    names = ["billing.charge", "demo.add", "demo.sleep", "reports.demo_daily"]
    assert matching(names, "demo") == (["demo.add", "demo.sleep", "reports.demo_daily"], 3)
    assert matching(names, "DEMO.", limit=1) == (["demo.add"], 2)
    assert matching(names, "") == (names, 4)


def test_ids_in_tool_results_link_their_resources() -> None:
    fields = dict(LINKED_FIELDS)
    links = _links({"task_id": "t1", "workflow_id": "w1", "other": "x"}, fields)
    assert [link["uri"] for link in links] == ["celery://tasks/t1", "celery://workflows/w1"]
    assert all(link["type"] == "resource_link" for link in links)
    assert _links({"task_id": "t1", "last_task_id": "t1"}, fields) == links[:1]
    assert _links(None, fields) == []
    entry = _links({"name": "daily", "task_id": "t2"}, {**fields, "name": ENTRY_TEMPLATE})
    assert {link["uri"] for link in entry} == {"celery://schedules/daily", "celery://tasks/t2"}


def test_subscriptions_are_offered_only_where_the_backend_publishes() -> None:
    assert backend_publishes(Settings())
    assert backend_publishes(Settings(broker_url="redis://h:6379/0"))
    assert not backend_publishes(Settings(broker_url="amqp://h//"))
    assert not backend_publishes(Settings(broker_url="redis://h/0", result_backend="rpc://"))
    assert backend_publishes(Settings(app="proj.celery:app"))


def test_stale_names_are_served_while_one_refresh_runs() -> None:
    import threading
    import time

    from celery_mcp.service import suggestions

    reads: list[int] = []
    gate = threading.Event()

    def source(cluster: Any) -> list[str]:
        reads.append(1)
        gate.wait(5)
        return [f"demo.t{len(reads)}"]

    names = suggestions.Suggestions(lambda: None, ttl_s=0.0)  # type: ignore[arg-type,return-value]
    original = suggestions.SOURCES["task_name"]
    suggestions.SOURCES["task_name"] = source
    try:
        assert names.cached("task_name") is None
        gate.set()
        assert names.read("task_name") == ["demo.t1"]
        gate.clear()
        assert names.cached("task_name") == ["demo.t1"]  # stale: served, one refresh starts
        assert names.cached("task_name") == ["demo.t1"]  # no second refresh meanwhile
        gate.set()
        deadline = time.monotonic() + 5
        while names.cached("task_name") == ["demo.t1"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(reads) >= 2 and names.cached("task_name") != ["demo.t1"]
    finally:
        suggestions.SOURCES["task_name"] = original
