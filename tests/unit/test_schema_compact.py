"""Compacted schemas are smaller and accept/reject exactly what the originals do."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from celery_mcp.models.health import HealthResult
from celery_mcp.models.tasks import SendTaskInput, TaskResult
from celery_mcp.schema_compact import compact_schema

SAMPLES: list[Any] = [
    {"task_name": "demo.add"},
    {"task_name": "demo.add", "args": [1, {"a": [None]}], "kwargs": {"x": 1.5}},
    {"task_name": "demo.add", "priority": None, "countdown": 3},
    {"task_name": "demo.add", "priority": 10},
    {"task_name": "demo.add", "priority": "high"},
    {"task_name": "bad name!"},
    {"task_name": "demo.add", "queue": None},
    {"task_name": "demo.add", "queue": ""},
    {"task_name": "demo.add", "expires": "2030-01-01T00:00:00Z"},
    {},
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_input_schema_accepts_and_rejects_the_same(sample: Any) -> None:
    original = SendTaskInput.model_json_schema()
    compact = compact_schema(original)
    assert _valid(original, sample) == _valid(compact, sample)


def test_output_schemas_validate_real_outputs() -> None:
    result = TaskResult(task_id="x", status="SUCCESS", ready=True, success=True, waited_s=0.1)
    for model, value in ((TaskResult, result),):
        compact = compact_schema(model.model_json_schema(mode="serialization"), for_output=True)
        jsonschema.validate(value.model_dump(mode="json"), compact)


def test_compaction_drops_titles_and_null_defaults() -> None:
    compact = compact_schema(HealthResult.model_json_schema(), for_output=True)
    text = str(compact)
    assert "'title'" not in text and "'description'" not in text
    assert "additionalProperties" not in text
    assert len(text) < len(str(HealthResult.model_json_schema())) * 0.5


def test_property_named_title_is_kept() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}}
    assert compact_schema(schema) == {"type": "object", "properties": {"title": {"type": "string"}}}


def _valid(schema: dict[str, Any], value: Any) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True
