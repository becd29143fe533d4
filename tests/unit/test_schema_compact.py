"""Compacted schemas are smaller and accept/reject exactly what the originals do."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from celery_mcp.interfaces.mcp.schema_compact import ANY_JSON, compact_input, output_shape
from celery_mcp.models.health import ComponentHealth, HealthResult
from celery_mcp.models.tasks import SendTaskInput, TaskResult
from celery_mcp.service.registry import OPERATIONS

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
    compact = compact_input(original)
    if _valid(original, sample) and None not in sample.values():
        assert _valid(compact, sample)  # refuses nothing the model accepts (nulls: leave out)
    if _valid(compact, sample):  # what it accepts differs only in server-side string limits
        assert _valid(_without_string_limits(original), sample)


def test_no_type_arrays_in_compact_schemas() -> None:
    for prop in _props(SendTaskInput):
        assert not isinstance(prop.get("type"), list), prop
        assert {"type": "null"} not in prop.get("anyOf", []), prop


def _props(model: Any) -> list[dict[str, Any]]:
    return list(compact_input(model.model_json_schema())["properties"].values())


def test_output_schemas_validate_real_outputs() -> None:
    result = TaskResult(task_id="x", status="SUCCESS", ready=True, success=True, waited_s=0.1)
    for model, value in ((TaskResult, result),):
        shape = output_shape(model.model_json_schema(mode="serialization"))
        assert shape is not None
        jsonschema.validate(value.model_dump(mode="json"), shape)


def test_output_shape_keeps_top_level_names_and_types() -> None:
    shape = output_shape(HealthResult.model_json_schema())
    assert shape is not None
    assert shape["properties"]["ok"] == {"type": "boolean"}
    assert shape["properties"]["broker"] == {"type": "object"}
    assert shape["properties"]["worker_names"] == {"type": "array", "items": {"type": "string"}}
    assert ComponentHealth.model_fields["ok"].annotation == bool | None
    inner = output_shape(ComponentHealth.model_json_schema())
    nullable = {"anyOf": [{"type": "null"}, {"type": "boolean"}]}
    assert inner is not None and inner["properties"]["ok"] == nullable
    assert set(shape["properties"]) == set(HealthResult.model_fields)


def test_input_compaction_drops_titles_and_nested_descriptions() -> None:
    compact = compact_input(SendTaskInput.model_json_schema())
    text = str(compact)
    assert "'title'" not in text
    assert compact["properties"]["task_name"]["description"]


def test_property_named_title_is_kept() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}}
    assert compact_input(schema) == {"type": "object", "properties": {"title": {"type": "string"}}}


def _without_string_limits(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _without_string_limits(v)
            for k, v in schema.items()
            if k not in ("pattern", "minLength", "maxLength")
        }
    if isinstance(schema, list):
        return [_without_string_limits(v) for v in schema]
    return schema


def _valid(schema: dict[str, Any], value: Any) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def _untyped(schema: Any, path: str = "") -> list[str]:
    """Paths of subschemas with no validation keyword (the Inspector's 'untyped-schema')."""
    if not isinstance(schema, dict):
        return []
    found = [] if set(schema) & CONSTRAINING else [path]
    for key in ("items", "additionalProperties"):
        found += _untyped(schema.get(key), f"{path}.{key}")
    for key in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(schema.get(key, [])):
            found += _untyped(sub, f"{path}.{key}[{i}]")
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            found += _untyped(sub, f"{path}.{key}.{name}")
    return found


CONSTRAINING = {"type", "enum", "const", "anyOf", "allOf", "oneOf", "$ref", "properties", "items"}


def test_every_listed_schema_is_typed() -> None:
    for op in OPERATIONS.values():
        compact = compact_input(op.input_model.model_json_schema())
        shape = output_shape(op.output_model.model_json_schema(mode="serialization"))
        assert _untyped(compact) == [] and _untyped(shape) == [], op.name


def test_any_json_accepts_every_json_value() -> None:
    for value in ({"a": 1}, [1], "x", 1.5, 2, True, None):
        jsonschema.validate(value, ANY_JSON)
