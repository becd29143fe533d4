"""The operation registry: one entry per service call, read by the server, facade and CLI.

An operation is a sync function `(cluster, request) -> response` whose request and response are
pydantic models; `@operation(...)` records it with its toolset and safety flags, and its
docstring becomes the tool description. The MCP server turns each into a tool, the CLI into an
`--action`, the facade into a method: one schema, three front ends.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, get_type_hints

from pydantic import BaseModel

from celery_mcp.config import Settings

#: Service modules that define operations; each registers on import.
MODULES: tuple[str, ...] = (
    "celery_mcp.service.tasks",
    "celery_mcp.service.workers",
    "celery_mcp.service.workflows",
    "celery_mcp.service.catalog",
    "celery_mcp.service.schedules",
    "celery_mcp.service.history",
    "celery_mcp.service.diagnose",
    "celery_mcp.service.health",
)


class Progress(Protocol):
    """Progress callback given to long operations: (done, total, message)."""

    def __call__(self, progress: float, total: float | None, message: str) -> None: ...


@dataclass(frozen=True)
class Operation:
    """One service call and what front ends need to know about it."""

    name: str
    toolset: str
    func: Callable[..., BaseModel]
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    description: str
    read_only: bool
    destructive: bool
    idempotent: bool
    reports_progress: bool
    wait_field: str | None  # input field holding a wait in seconds, added to the call's bound

    def bound_s(self, settings: Settings, request: BaseModel) -> float:
        """Upper bound on one call: the call timeout plus any wait the caller asked for."""
        extra = float(getattr(request, self.wait_field, 0) or 0) if self.wait_field else 0.0
        return settings.call_timeout_s + extra


OPERATIONS: dict[str, Operation] = {}

F = TypeVar("F", bound=Callable[..., Any])


def operation(
    toolset: str,
    *,
    read_only: bool,
    destructive: bool = False,
    idempotent: bool = False,
    wait_field: str | None = None,
) -> Callable[[F], F]:
    """Register `func(cluster, request[, progress]) -> response` as an operation."""

    def register(func: F) -> F:
        hints = get_type_hints(func)
        params = [p for p in hints if p != "return"]
        doc = " ".join((func.__doc__ or "").split())
        OPERATIONS[func.__name__] = Operation(
            name=func.__name__,
            toolset=toolset,
            func=func,
            input_model=hints[params[1]],
            output_model=hints["return"],
            description=doc,
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent or read_only,
            reports_progress="progress" in params,
            wait_field=wait_field,
        )
        return func

    return register


def load_operations() -> dict[str, Operation]:
    """Import every service module (registering its operations) and return the registry."""
    for module in MODULES:
        importlib.import_module(module)
    return OPERATIONS


def select(settings: Settings) -> list[Operation]:
    """The operations exposed under `settings` (toolsets, read-only), in registration order."""
    return [
        op
        for op in load_operations().values()
        if op.toolset in settings.toolsets and (op.read_only or not settings.read_only)
    ]
