"""Input caps and output capping: pure functions over JSON values."""

from __future__ import annotations

import json
from typing import Any

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.common import Truncation


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting stops once `limit` is passed."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth


def check_payload(args: Any, kwargs: Any, *, max_bytes: int, max_depth: int) -> int:
    """Raise InvalidArgument when args+kwargs exceed the size or depth caps; return the size."""
    size = len(json.dumps([args, kwargs], separators=(",", ":")))
    if size > max_bytes:
        raise InvalidArgument(
            f"args+kwargs are {size} bytes serialized, over the cap of {max_bytes}",
            hint="pass a reference (key, URL) to large data instead of the data",
        )
    depth = json_depth([args, kwargs], max_depth + 1) - 1
    if depth > max_depth:
        raise InvalidArgument(f"args/kwargs nest deeper than {max_depth} levels")
    return size


def cap_json(field: str, value: Any, max_bytes: int) -> tuple[Any, Truncation | None]:
    """`value` unchanged if its JSON fits `max_bytes`, else a cut JSON string and a note."""
    try:
        text = json.dumps(value, default=repr, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= max_bytes:
        return value, None
    return text[:max_bytes], _note(field, len(text), max_bytes)


def cap_text(field: str, text: str | None, max_bytes: int) -> tuple[str | None, Truncation | None]:
    """`text` unchanged if it fits, else its last `max_bytes` characters (tracebacks end well)."""
    if text is None or len(text) <= max_bytes:
        return text, None
    return text[-max_bytes:], _note(field, len(text), max_bytes)


def _note(field: str, original: int, kept: int) -> Truncation:
    return f"{field}: {original} -> {kept} bytes"
