"""Shrink JSON schemas for `tools/list` without changing what inputs they accept.

The tool list is sent to the agent on every turn, so every byte counts: pydantic's schemas
carry a `title` on every property, `"default": null` on optional ones and `anyOf [X, null]`
for `X | None`. This drops the titles and null defaults, folds `anyOf [X, null]` into `X`
with a `null` type and inlines empty `$defs` (JsonValue). Output schemas keep only the
shape: names and types (the server validates its own output with the full model).
Unit tests check with jsonschema that inputs are accepted and refused as before.
"""

from __future__ import annotations

from typing import Any

_MAPS = ("properties", "$defs", "patternProperties", "definitions")
#: Keys an output schema can lose: annotations, and checks of the server's own output.
_OUTPUT_NOISE = {"description", "additionalProperties", "format", "required"}


def _fold_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not isinstance(options, list) or len(options) != 2 or {"type": "null"} not in options:
        return schema
    other = next(o for o in options if o != {"type": "null"})
    kind = other.get("type")
    if not isinstance(kind, str) or "$ref" in other or "enum" in other:
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    merged.update({k: v for k, v in other.items() if k not in merged or k == "type"})
    merged["type"] = [kind, "null"]
    return merged


def compact_schema(
    schema: Any, *, for_output: bool = False, defs: dict[str, Any] | None = None
) -> Any:
    """A smaller equivalent of `schema` (see module docstring)."""
    if isinstance(schema, list):
        return [compact_schema(item, for_output=for_output, defs=defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = schema.get("$defs", {})
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref[8:])
        if target == {}:
            return {}
        if for_output and isinstance(target, dict) and "enum" in target:
            return {"type": target.get("type", "string")}
    out: dict[str, Any] = {}
    for key, value in _fold_nullable(schema).items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and (value is None or for_output):
            continue
        if for_output and key in _OUTPUT_NOISE and value is not True:
            continue
        if key in _MAPS and isinstance(value, dict):
            kept = {
                name: compact_schema(sub, for_output=for_output, defs=defs)
                for name, sub in value.items()
                if not (key == "$defs" and (sub == {} or (for_output and "enum" in sub)))
            }
            if kept or key != "$defs":
                out[key] = kept
            continue
        out[key] = compact_schema(value, for_output=for_output, defs=defs)
    return out
