"""The facade's shared types: what a method returns, and the call every manager makes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: A method's result: the operation's output model as JSON-ready dict.
Result = dict[str, Any]
#: `CelerySkill._call(operation_name, **fields) -> Result`: the one way into the service.
Call = Callable[..., Result]
