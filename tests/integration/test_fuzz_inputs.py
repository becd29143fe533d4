"""Property-based fuzzing of every tool's input: no crash, only typed errors.

Hypothesis builds arguments from each tool's own input schema (right types and near-miss
bounds, wrong types, junk JSON, unknown keys). The bulk runs in-process through the same path
the server takes (input model, then the operation against a real Cluster); a few hundred go
over real MCP stdio to a `celery-mcp serve` process. Both use broker/backend databases that no
worker listens on (Redis fanout is per database), so state-changing tools act on nothing.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio.from_thread
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from celery_mcp.config import Settings
from celery_mcp.errors import CeleryMcpError
from celery_mcp.runtime.embedded import EmbeddedServer
from celery_mcp.service.cluster import Cluster
from celery_mcp.service.funnel import implementation
from celery_mcp.service.registry import Operation, offered
from tests.support import error_text, mcp_session

pytestmark = pytest.mark.integration  # real Valkey, and a real server for the MCP part

BROKER_DB, BACKEND_DB = 12, 13
IN_PROCESS_EXAMPLES = 3000
OVER_MCP_EXAMPLES = 300
WAIT_FIELDS = ("timeout_s", "wait_s")
MAX_WAIT_S = 0.05

#: Every code a typed error can carry (errors.py), plus the SDK's argument validation.
TYPED = re.compile(
    r"\b(invalid_argument|unknown_task|confirmation_required|not_found|forbidden|unavailable|"
    r"broker_unavailable|backend_unavailable|no_workers|timeout)\b|validation error"
)

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
JUNK = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
NAMES = st.sampled_from(
    ["demo.add", "demo.echo", "demo.fail", "demo.noop", "demo.xsum", "demo.nope", "celery.x"]
)
DATES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2400, 1, 1), timezones=st.just(UTC)
).map(datetime.isoformat)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not ref:
        return schema
    return {**defs[ref.rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}


def from_schema(schema: dict[str, Any], defs: dict[str, Any], name: str = "") -> Any:
    """Values near `schema`: valid ones, boundary misses, other types and junk JSON."""
    schema = _resolve(schema, defs)
    options: list[Any] = []
    if "anyOf" in schema:
        options += [from_schema(s, defs, name) for s in schema["anyOf"]]
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date-time":
            options.append(DATES)
        elif "name" in name:
            options.append(NAMES)
        options.append(st.text(max_size=min(schema.get("maxLength", 40), 40) + 2))
    elif kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1000))
        high = schema.get("maximum", 10**6)
        ints = st.integers(int(low) - 2, int(min(high, 10**9)) + 2)
        options.append(ints if kind == "integer" else ints | st.floats(low - 1, high + 1))
    elif kind == "boolean":
        options.append(st.booleans())
    elif kind == "array":
        item = from_schema(schema.get("items", {}), defs, name)
        options.append(st.lists(item, max_size=min(schema.get("maxItems", 3), 3) + 1))
    elif kind == "object" and "properties" in schema:
        options.append(arguments_for(schema, defs))
    return sometimes(JUNK, st.one_of(*options) if options else JUNK)


def sometimes(rare: Any, usual: Any) -> Any:
    """`rare` about one draw in twelve, else `usual`."""
    return st.integers(0, 11).flatmap(lambda i: rare if i == 0 else usual)


def arguments_for(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """Argument dicts for an object schema: required fields mostly there, optional ones mixed."""
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = {k: from_schema(v, defs, k) for k, v in props.items()}
    base = st.fixed_dictionaries(
        {k: s for k, s in fields.items() if k in required},
        optional={k: s for k, s in fields.items() if k not in required},
    )
    extra = st.dictionaries(st.text(min_size=1, max_size=8), JUNK, min_size=1, max_size=2)
    with_extra = st.tuples(base, extra).map(lambda t: {**t[1], **t[0]})
    return sometimes(st.dictionaries(st.text(max_size=8), JUNK, max_size=3) | with_extra, base)


def tool_calls(ops: list[Operation]) -> Any:
    """(operation, arguments) pairs over every operation, waits capped short."""

    def for_op(op: Operation) -> Any:
        schema = op.input_model.model_json_schema()
        waits = [k for k in WAIT_FIELDS if k in op.input_model.model_fields]
        return arguments_for(schema, schema.get("$defs", {})).map(lambda a: (op, _short(a, waits)))

    return st.one_of(*[for_op(op) for op in ops])


def _short(arguments: dict[str, Any], waits: list[str]) -> dict[str, Any]:
    """Cap the waits a caller may ask for (defaults included), so no example idles."""
    for key in waits:
        value = arguments.get(key, MAX_WAIT_S)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > MAX_WAIT_S:
            value = MAX_WAIT_S
        arguments[key] = value
    return arguments


@pytest.fixture(scope="module")
def fuzz_settings(embedded: EmbeddedServer, data_dir: Any) -> Iterator[Settings]:
    """Settings on databases no worker uses; emptied afterwards."""
    yield Settings(
        data_dir=data_dir,
        broker_url=embedded.url_for_db(BROKER_DB),
        result_backend=embedded.url_for_db(BACKEND_DB),
        toolsets="all",
        inspect_timeout_s=0.1,
    )
    gc.collect()  # dead AsyncResults unsubscribe now, while the backend is still up
    for db in (BROKER_DB, BACKEND_DB):
        client = redis.Redis.from_url(embedded.url_for_db(db), socket_timeout=5)
        client.flushdb()
        client.close()


def test_random_inputs_in_process_give_results_or_typed_errors(fuzz_settings: Settings) -> None:
    cluster = Cluster(fuzz_settings)
    ops = offered(fuzz_settings, "mcp")
    tally = {"invalid": 0, "typed": 0, "ok": 0}
    slowest = 0.0

    @settings(
        max_examples=IN_PROCESS_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(tool_calls(ops))
    def run(call: tuple[Operation, dict[str, Any]]) -> None:
        nonlocal slowest
        op, arguments = call
        try:
            request = op.input_model.model_validate(arguments)
        except ValidationError:
            tally["invalid"] += 1
            return
        start = time.monotonic()
        try:
            out = implementation(op)(cluster, request)
        except CeleryMcpError as exc:
            assert exc.code and exc.message, op.name
            tally["typed"] += 1
        else:
            assert isinstance(out, op.output_model) and isinstance(out, BaseModel), op.name
            out.model_dump_json()
            tally["ok"] += 1
        took = time.monotonic() - start
        if took > slowest:
            slowest = took
            print(f"slowest so far: {op.name} {took:.2f}s {str(arguments)[:300]}")
        assert took <= op.bound_s(fuzz_settings, request) + 1.0, (op.name, arguments, took)

    run()
    print(f"in-process: {tally}, slowest call {slowest:.2f}s")
    assert sum(tally.values()) >= IN_PROCESS_EXAMPLES
    assert tally["ok"] > 0 and tally["typed"] > 0 and tally["invalid"] > 0


def test_random_inputs_over_mcp_give_results_or_typed_errors(
    env: dict[str, str], fuzz_settings: Settings
) -> None:
    ops = offered(fuzz_settings, "mcp")
    server_env = env | {
        "CELERY_MCP_BROKER_URL": str(fuzz_settings.broker_url),
        "CELERY_MCP_RESULT_BACKEND": str(fuzz_settings.result_backend),
        "CELERY_MCP_TOOLSETS": "all",
        "CELERY_MCP_INSPECT_TIMEOUT_S": "0.1",
    }
    tally = {"error": 0, "ok": 0}
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(mcp_session(server_env)) as session,
    ):

        @settings(
            max_examples=OVER_MCP_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(tool_calls(ops))
        def run(call: tuple[Operation, dict[str, Any]]) -> None:
            op, arguments = call
            start = time.monotonic()
            result = portal.call(session.call_tool, op.name, arguments)
            if time.monotonic() - start > 0.5:
                print(f"slow: {op.name} {time.monotonic() - start:.2f}s {str(arguments)[:300]}")
            if result.is_error:
                text = error_text(result)
                assert TYPED.search(text), (op.name, arguments, text)
                assert "internal_error" not in text, (op.name, arguments, text)
                tally["error"] += 1
            else:
                assert result.structured_content is not None, op.name
                tally["ok"] += 1

        run()
        assert portal.call(session.send_ping) is not None  # the server is still up
    print(f"over MCP: {tally}")
    assert tally["ok"] > 0 and tally["error"] > 0


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("map_task", {"task_name": "demo.add", "items": [[]], "validate_args": False}),
        (
            "chord_workflow",
            {
                "header": [{"task_name": "demo.xsum", "validate_args": False}],
                "callback": {"task_name": "demo.xsum"},
            },
        ),
    ],
)
def test_unchecked_workflow_arity_is_a_typed_error(
    fuzz_settings: Settings, tool: str, arguments: dict[str, Any]
) -> None:
    """Found by the fuzzer: Celery's own arity check used to escape as internal_error."""
    op = next(op for op in offered(fuzz_settings, "mcp") if op.name == tool)
    with pytest.raises(CeleryMcpError):
        implementation(op)(Cluster(fuzz_settings), op.input_model.model_validate(arguments))
