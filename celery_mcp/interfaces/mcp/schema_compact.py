"""Shrink the JSON schemas of `tools/list`: it is sent to the agent on every turn.

- `compact_input`: the arguments, types, numeric ranges and enums in fewer bytes. Drops
  pydantic's `title` on every property and `"default": null`, turns an optional
  `anyOf [X, null]` into `X` (leave the argument out instead of sending null), inlines empty
  `$defs` (JsonValue), keeps descriptions only on the tool's own arguments, and leaves string
  patterns and length limits to the server, which validates every call with the full model
  and answers `invalid_argument`. Unit tests check with jsonschema that the compact schema
  refuses nothing the model accepts.
- `output_shape`: the output's top level: field names and types (a nullable field is
  `anyOf [null, X]`). The server validates its own output with the full pydantic model; the
  agent reads nested details from the result itself.

No schema is left untyped: a value that may be any JSON (task args, results) is spelled
`ANY_JSON`, one `anyOf` branch per JSON type, rather than `{}`, which the Inspector's
portability check flags ("accepts any value") and which gives a client nothing to map.
"""

from __future__ import annotations

from typing import Any

_MAPS = ("properties", "$defs", "patternProperties", "definitions")
_PRIMITIVES = {"string", "number", "integer", "boolean", "null"}
#: Limits the server checks with the full model; noise in every turn's tool list.
_SERVER_SIDE = {"pattern", "minLength", "maxLength", "minItems", "maxItems"}
#: Keys whose value is data, not a schema.
_DATA = {"default", "examples", "enum", "const"}
#: Any JSON value, one single-`type` branch per JSON type (portable, unlike a type array).
#: `null` comes first, here and in nullable fields: clients validate each result against the
#: output schema, trying the branches in order, and most optional fields are null (measured:
#: the official client validates a get_result answer in 63 us instead of 149).
ANY_JSON: dict[str, Any] = {
    "anyOf": [{"type": t} for t in ("null", "string", "number", "object", "array", "boolean")]
}


def _fold_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop `null` from an optional argument's `anyOf`: it is simply left out instead.

    Type arrays (`["string", "null"]`) would be shorter, but some clients reject them.
    """
    options = schema.get("anyOf")
    if "default" not in schema or not isinstance(options, list) or {"type": "null"} not in options:
        return schema
    rest = [o for o in options if o != {"type": "null"}]
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(rest) == 1:
        merged.update({k: v for k, v in rest[0].items() if k not in merged})
    else:
        merged["anyOf"] = rest
    return merged


def _compact(schema: Any, defs: dict[str, Any], describe: bool) -> Any:
    if isinstance(schema, list):
        return [_compact(item, defs, describe) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if not schema or (
        isinstance(ref, str) and ref.startswith("#/$defs/") and defs.get(ref[8:]) == {}
    ):
        return dict(ANY_JSON)
    out: dict[str, Any] = {}
    for key, value in _fold_nullable(schema).items():
        if (key == "title" and isinstance(value, str)) or (key == "default" and value is None):
            continue
        if (key == "description" and not describe) or key in _SERVER_SIDE:
            continue
        if key in _DATA:
            out[key] = value
        elif key == "$defs" and isinstance(value, dict):
            kept = {n: _compact(s, defs, False) for n, s in value.items() if s != {}}
            if kept:
                out[key] = kept
        elif key in _MAPS and isinstance(value, dict):
            out[key] = {n: _compact(s, defs, describe) for n, s in value.items()}
        else:
            out[key] = _compact(value, defs, describe)
    return out


def compact_input(schema: dict[str, Any]) -> dict[str, Any]:
    """An equivalent, smaller input schema (see module docstring)."""
    top = _compact(schema, schema.get("$defs", {}), True)
    assert isinstance(top, dict)
    return top


def _type_of(schema: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON type of a property: `{"type": X}`, `anyOf [null, X]` when nullable, arrays
    keeping primitive item types, ANY_JSON when it may be anything."""
    if not isinstance(schema, dict):
        return dict(ANY_JSON)
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _type_of(defs.get(ref[8:], {}), defs)
    if "anyOf" in schema:
        options = [_type_of(option, defs) for option in schema["anyOf"]]
        kinds = [o for o in options if o != {"type": "null"}]
        nullable = len(kinds) < len(options)
        if len(kinds) == 1 and "type" in kinds[0]:
            return {"anyOf": [{"type": "null"}, kinds[0]]} if nullable else kinds[0]
        return dict(ANY_JSON)  # mixed types: any (the full model validates the output)
    kind = schema.get("type")
    if kind == "array":
        items = _type_of(schema.get("items", {}), defs)
        return (
            {"type": "array", "items": items}
            if items.get("type") in _PRIMITIVES
            else {"type": "array"}
        )
    return {"type": kind} if isinstance(kind, str) else dict(ANY_JSON)


def output_shape(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The top-level shape of an object output schema (names and types only)."""
    if schema is None:
        return None
    defs = schema.get("$defs", {})
    props = {name: _type_of(sub, defs) for name, sub in schema.get("properties", {}).items()}
    return {"type": "object", "properties": props}
