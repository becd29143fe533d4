"""MCP resources and resource templates: the views of `service.views`, read through the funnel.

Each view becomes a resource (or template) whose read prepares its operation(s) with
`funnel.prepare` (policy applies once, as for tools) and runs them with the server's
`Runner` (a worker thread under the call's bound); the text is the operation's output model as
JSON, so a resource and its tool return the same data. Typed errors become MCP errors whose
message starts with the error code; an unknown id or name (`not_found`, `invalid_argument`,
`unknown_task`) is the spec's resource-not-found (-32602, SEP-2164).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from pydantic import BaseModel

from celery_mcp.config import Settings, redact_url
from celery_mcp.errors import CeleryMcpError, InvalidArgument, NotFound
from celery_mcp.service.funnel import Call
from celery_mcp.service.views import View, assemble, offered_views, prepare_view

log = logging.getLogger("celery_mcp.server")

MIME = "application/json"

#: Runs one prepared call off the event loop under its bound (TimeoutError when it runs out).
Runner = Callable[[Call], Awaitable[BaseModel]]


def resource_error(exc: BaseException, what: str) -> ResourceError:
    """The MCP error for a failed read: code first, then what to do next."""
    if isinstance(exc, CeleryMcpError):  # a bad or unknown id or name: no such resource
        missing = isinstance(exc, NotFound | InvalidArgument)
        return (ResourceNotFoundError if missing else ResourceError)(f"{exc.code}: {exc}")
    if isinstance(exc, TimeoutError):
        return ResourceError(
            f"timeout: {what} did not finish within its bound "
            "(broker, backend or workers not answering; call health)"
        )
    log.error("%s failed", what, exc_info=exc)
    return ResourceError(f"internal_error: {type(exc).__name__}: {redact_url(str(exc))}")


async def read_view(
    view: View, settings: Settings, runner: Runner, values: Mapping[str, str]
) -> BaseModel:
    """Run `view`'s calls (concurrently for a composite) and assemble its model."""
    try:
        calls = prepare_view(view, settings, values)
    except CeleryMcpError as exc:
        raise resource_error(exc, view.uri) from None
    results: dict[str, BaseModel] = {}
    errors: list[BaseException] = []

    async def fill(key: str, call: Call) -> None:
        try:
            results[key] = await runner(call)
        except Exception as exc:  # the first error is reported below, whole
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for key, call in calls.items():
            group.start_soon(fill, key, call)
    if errors:
        raise resource_error(errors[0], view.uri) from None
    return assemble(view, results)


def _reader(view: View, settings: Settings, runner: Runner) -> Callable[..., Any]:
    """An async function with one keyword parameter per template variable."""

    async def read(**values: str) -> str:
        model = await read_view(view, settings, runner, values)
        return model.model_dump_json(by_alias=True)  # as the tool's structured content

    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
        for name in view.variables
    ]
    read.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    read.__annotations__ = {p.name: str for p in params} | {"return": str}
    read.__name__ = view.name
    read.__doc__ = view.description
    return read


def register_resources(server: MCPServer, settings: Settings, runner: Runner) -> list[View]:
    """Add the views `settings` offers as resources and templates; return them."""
    views = offered_views(settings)
    for view in views:
        server.resource(
            view.uri,
            name=view.name,
            title=view.title,
            description=view.description,
            mime_type=MIME,
        )(_reader(view, settings, runner))
    return views
