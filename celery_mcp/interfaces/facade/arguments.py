"""How the Python API reads the values Python callers pass (the seed's spellings included).

A naive datetime is the caller's local time (what `datetime.now()` returns), a `timedelta` is
a number of seconds, a tuple is a list: the operations' models, shared with the MCP tools, take
aware datetimes, seconds and JSON lists, so the facade converts before it calls.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def aware(value: Any) -> Any:
    """A naive datetime as the caller's local time; anything else unchanged."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.astimezone()
    return value


def seconds(value: Any) -> Any:
    """A timedelta as seconds; anything else unchanged."""
    return value.total_seconds() if isinstance(value, timedelta) else value
