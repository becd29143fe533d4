"""The one funnel every front end calls operations through, and the loading of implementations.

`prepare(name, settings, fields, front_end)` finds the operation in the table (`registry`),
applies the policy (read-only, toolsets; see `policy`) and validates the fields with the input
model, raising a typed error; the returned `Call` runs it. The MCP server prepares on its event
loop and runs in a worker thread; the facade and the CLI `invoke` (prepare + run) directly.

An implementation's module is imported on its first call (`implementation`): importing them
all took 95 ms at server start, and they import Celery (`load_all` warms them).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from celery_mcp.config import Settings
from celery_mcp.errors import InvalidArgument, validation_message
from celery_mcp.service.cancel import Progress
from celery_mcp.service.policy import FrontEnd, check_operation, with_defaults
from celery_mcp.service.registry import OPERATIONS, Operation, find

if TYPE_CHECKING:  # types only: the cluster module imports Celery
    from celery_mcp.service.cluster import Cluster


@cache
def implementation(op: Operation) -> Callable[..., BaseModel]:
    """The function implementing `op` (its module imported on first use)."""
    impl: Callable[..., BaseModel] = getattr(importlib.import_module(op.implemented_in), op.name)
    return impl


def load_all() -> dict[str, Operation]:
    """Import every implementation (a server warms up with this after it starts listening)."""
    for op in OPERATIONS.values():
        implementation(op)
    return OPERATIONS


@dataclass(frozen=True)
class Call:
    """A validated, allowed call of one operation, ready to run."""

    op: Operation
    request: BaseModel

    def bound_s(self, settings: Settings) -> float:
        return self.op.bound_s(settings, self.request)

    def run(self, cluster: Cluster, progress: Progress | None = None) -> BaseModel:
        func = implementation(self.op)
        if self.op.progress and progress is not None:
            return func(cluster, self.request, progress=progress)
        return func(cluster, self.request)


def parse(op: Operation, fields: Mapping[str, Any] | BaseModel) -> BaseModel:
    """`fields` as the operation's input model, or InvalidArgument saying what is wrong."""
    if isinstance(fields, op.input_model):
        return fields
    try:
        return op.input_model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidArgument(
            f"{op.name}: {validation_message(exc)}", hint=f"{op.name}: {op.description}"
        ) from None


def prepare(
    name: str,
    settings: Settings,
    fields: Mapping[str, Any] | BaseModel,
    front_end: FrontEnd,
) -> Call:
    """The funnel: find `name`, check the policy for `front_end`, validate `fields`."""
    op = find(name)
    check_operation(settings, op.name, op.toolset, op.read_only, front_end)
    if isinstance(fields, BaseModel):
        return Call(op, parse(op, fields))
    return Call(op, parse(op, with_defaults(front_end, op.input_model.model_fields, fields)))


def invoke(
    name: str,
    cluster: Cluster,
    fields: Mapping[str, Any] | BaseModel,
    front_end: FrontEnd,
    progress: Progress | None = None,
) -> BaseModel:
    """Prepare and run one operation (the facade and the CLI call this)."""
    return prepare(name, cluster.settings, fields, front_end).run(cluster, progress)


def signature_matches(op: Operation) -> bool:
    """True when the implementation takes (cluster, request[, progress]) with the table's
    models (a unit test checks every operation)."""
    func = implementation(op)
    params = list(inspect.signature(func).parameters)
    hints = inspect.get_annotations(func, eval_str=True)
    return (
        params[:2] == ["cluster", "request"]
        and hints.get("request") is op.input_model
        and hints.get("return") is op.output_model
        and ("progress" in params) == op.progress
    )
