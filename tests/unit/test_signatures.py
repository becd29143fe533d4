"""Signature -> JSON schema -> argument check, on plain functions and in-process Celery tasks."""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from celery import Celery
from pydantic import BaseModel, Field

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.catalog import TaskSpec
from celery_mcp.runtime.worker.commands import task_specs
from celery_mcp.service.signatures import (
    DOC_MAX_CHARS,
    SUMMARY_MAX_CHARS,
    call_problems,
    check_call,
    doc_parts,
    function_signature,
    parameters_of,
    task_spec,
    type_text,
)

if TYPE_CHECKING:
    from decimal import Decimal  # only for type checkers: unresolvable at run time


class Item(BaseModel):
    sku: str
    qty: int = 1


class Opaque:
    """A class pydantic cannot describe."""


def _spec(func: Any, name: str = "t.f") -> TaskSpec:
    app = Celery("unit", set_as_current=False)
    return task_spec(app.task(name=name, shared=False)(func))


def test_doc_parts_takes_first_line_and_caps_long_docstrings() -> None:
    assert doc_parts(None) == ("", None, False)
    summary, doc, cut = doc_parts("  Do a thing.\n\n    More text.\n")
    assert summary == "Do a thing." and doc == "Do a thing.\n\nMore text." and not cut
    summary, doc, cut = doc_parts("x" * 300 + "\n" + "y" * 5000)
    assert len(summary) == SUMMARY_MAX_CHARS and summary.endswith("…")
    assert doc is not None and len(doc) == DOC_MAX_CHARS + 1 and cut


def test_type_text_drops_module_paths() -> None:
    assert type_text(int) == "int"
    assert type_text(list[int]) == "list[int]"
    assert type_text(Item) == "Item"
    assert type_text(dict[str, Any]) == "dict[str, Any]"
    assert type_text(int | None) == "int | None"
    assert type_text(inspect.Parameter.empty) is None


def test_plain_types_give_json_schema_with_required_and_defaults() -> None:
    def f(x: int, name: str = "a", tags: list[str] | None = None) -> None: ...

    sig = function_signature(f)
    assert sig is not None
    params, schema, var_args, unchecked = parameters_of(sig)
    assert schema == {
        "type": "object",
        "properties": {
            "x": {"type": "integer"},
            "name": {"type": "string", "default": "a"},
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    assert var_args is None and unchecked == []
    assert [(p.name, p.required, p.default) for p in params] == [
        ("x", True, None),
        ("name", False, "a"),
        ("tags", False, None),
    ]


def test_pydantic_model_argument_gives_its_schema() -> None:
    def untyped(item, n=1):  # type: ignore[no-untyped-def]
        return item

    spec = _spec(untyped)  # no hints: any value
    assert spec.signature == "t.f(item, n=1)"
    assert spec.parameters_schema is not None
    assert spec.parameters_schema["properties"] == {"item": {}, "n": {"default": 1}}

    def order(item: Item, note: Annotated[str, Field(description="Free text.")] = "") -> None:
        """Place an order."""

    spec = _spec(order)
    schema = spec.parameters_schema
    assert schema is not None
    assert schema["properties"]["item"]["required"] == ["sku"]
    assert schema["properties"]["item"]["properties"]["qty"] == {"type": "integer", "default": 1}
    assert schema["properties"]["note"]["description"] == "Free text."
    assert call_problems(spec, [{"sku": "a", "qty": "2"}], {}) == (
        "item.qty: '2' is not of type 'integer'"
    )
    assert call_problems(spec, [{"sku": "a"}], {"note": "x"}) is None


def test_nested_models_share_defs_and_name_clashes_stay_unchecked() -> None:
    other = type("Item", (BaseModel,), {"__annotations__": {"code": int}})

    def f(items: list[Item], maybe: Item | None = None, alien: list[other] | None = None) -> None:  # type: ignore[valid-type]
        ...

    spec = _spec(f)
    schema = spec.parameters_schema
    assert schema is not None
    assert schema["properties"]["items"] == {"type": "array", "items": {"$ref": "#/$defs/Item"}}
    assert schema["properties"]["maybe"]["anyOf"][0] == {"$ref": "#/$defs/Item"}
    assert schema["$defs"]["Item"]["required"] == ["sku"]
    assert spec.unchecked == ["alien"] and schema["properties"]["alien"] == {"default": None}
    assert call_problems(spec, [[{"sku": 2}]], {}) == "items[0].sku: 2 is not of type 'string'"


def test_none_default_admits_none_even_without_optional() -> None:
    def f(limit: int = None, page: int | None = None) -> None:  # type: ignore[assignment]
        ...

    spec = _spec(f)
    assert spec.signature == "t.f(limit: int = None, page: int | None = None)"
    assert spec.parameters_schema is not None
    props = spec.parameters_schema["properties"]
    assert props["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["page"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert call_problems(spec, [None], {"page": None}) is None
    assert call_problems(spec, ["1"], {}) is not None


def test_bound_task_leaves_out_self() -> None:
    app = Celery("unit", set_as_current=False)

    @app.task(name="t.bound", bind=True, shared=False)
    def bound(self: Any, x: int) -> int:
        return x

    spec = task_spec(bound)
    assert spec.signature == "t.bound(x: int)"
    assert [p.name for p in spec.parameters] == ["x"]


def test_class_based_task_uses_its_run_method() -> None:
    app = Celery("unit", set_as_current=False)

    class Resize(app.Task):  # type: ignore[name-defined,misc]
        """Resize an image."""

        name = "t.resize"
        max_retries = 2

        def run(self, path: str, width: int = 100) -> str:
            return path

    spec = task_spec(app.register_task(Resize()))
    assert spec.signature == "t.resize(path: str, width: int = 100)"
    assert spec.summary == "Resize an image." and spec.max_retries == 2


def test_var_args_and_kwargs_are_open_and_typed() -> None:
    def f(a: str, *rest: int, flag: bool = False, **extra: float) -> None: ...

    spec = _spec(f)
    assert spec.signature == "t.f(a: str, *rest: int, flag: bool = False, **extra: float)"
    assert spec.var_args_schema == {"type": "array", "items": {"type": "integer"}}
    assert spec.parameters_schema is not None
    assert spec.parameters_schema["additionalProperties"] == {"type": "number"}
    assert call_problems(spec, ["a", 1, 2], {"flag": True, "z": 1.5}) is None
    assert call_problems(spec, ["a", 1, "x"], {}) == "*rest[1]: 'x' is not of type 'integer'"
    assert call_problems(spec, ["a"], {"z": "no"}) == "**extra.z: 'no' is not of type 'number'"


def test_arity_and_keyword_mistakes_are_named() -> None:
    def f(x: int, /, y: int, *, z: int = 0) -> None: ...

    spec = _spec(f)
    assert spec.signature == "t.f(x: int, /, y: int, *, z: int = 0)"
    assert call_problems(spec, [1], {}) == "missing a required argument: 'y'"
    assert call_problems(spec, [1, 2, 3], {}) == "too many positional arguments"
    assert call_problems(spec, [1, 2], {"w": 1}) == "got an unexpected keyword argument 'w'"
    assert "positional only" in (call_problems(spec, [], {"x": 1, "y": 2}) or "")
    assert call_problems(spec, [True, 2], {}) == "x: True is not of type 'integer'"
    assert call_problems(spec, [1, 2], {"z": 3}) is None


def test_check_call_message_shows_the_expected_signature() -> None:
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(InvalidArgument) as caught:
        check_call(_spec(add, "demo.add"), [1, "2"], {})
    assert "demo.add(x: int, y: int)" in caught.value.message
    assert "y: '2' is not of type 'integer'" in caught.value.message
    assert caught.value.hint and "validate_args=false" in caught.value.hint


def test_problem_quoting_a_large_value_is_capped() -> None:
    def f(n: int) -> None: ...

    problem = call_problems(_spec(f), ["x" * 100_000], {})
    assert problem is not None and problem.startswith("n: 'xxx") and len(problem) < 400


def test_unresolvable_and_opaque_annotations_are_unchecked() -> None:
    def f(amount: Decimal, thing: Opaque, n: int) -> None: ...

    spec = _spec(f)
    assert spec.signature == "t.f(amount: Decimal, thing: Opaque, n: int)"
    assert spec.unchecked == ["amount", "thing"]
    assert call_problems(spec, ["anything", {"x": 1}, 3], {}) is None
    assert call_problems(spec, ["anything", {"x": 1}, "3"], {}) == "n: '3' is not of type 'integer'"


def test_task_options_are_reported() -> None:
    app = Celery("unit", set_as_current=False)
    app.conf.task_routes = {"t.routed": {"queue": "fast"}}

    @app.task(
        name="t.routed",
        shared=False,
        autoretry_for=(ConnectionError,),
        max_retries=5,
        default_retry_delay=7,
        retry_backoff=True,
        acks_late=True,
        rate_limit="5/m",
        time_limit=60,
        ignore_result=True,
    )
    def routed() -> None:
        """Routed."""

    spec = task_spec(routed)
    assert spec.queue == "fast" and spec.rate_limit == "5/m"
    assert spec.autoretry_for == ["ConnectionError"] and spec.max_retries == 5
    assert spec.default_retry_delay_s == 7 and spec.retry_backoff is True
    assert spec.acks_late is True and spec.ignore_result is True
    assert spec.time_limit_s == 60 and spec.soft_time_limit_s is None
    assert spec.summary == "Routed." and spec.signature == "t.routed()"


def test_worker_specs_round_trip_to_the_same_checks() -> None:
    """What a worker sends (JSON) checks arguments exactly like the app's own spec."""
    app = Celery("unit", set_as_current=False)

    @app.task(name="t.mixed", shared=False)
    def mixed(item: Item, *more: int, **opts: Any) -> None: ...

    wire = json.loads(json.dumps(task_specs(app)))
    assert "t.mixed" in wire
    received = TaskSpec.model_validate(wire["t.mixed"])
    assert received == task_spec(mixed)
    for args, kwargs in [([{"sku": 1}], {}), ([{"sku": "a"}, 1, "x"], {}), ([], {"a": 1})]:
        assert call_problems(received, args, kwargs) == call_problems(
            task_spec(mixed), args, kwargs
        )
        assert call_problems(received, args, kwargs) is not None
