"""MCP server: one tool per service operation, over stdio or streamable HTTP.

Each operation's input model becomes the tool's flat arguments (agents and the Inspector CLI
pass `{"task_id": ...}` more reliably than nested objects) and its output model the tool's
output schema. Calls run in worker threads under a hard bound, so a slow broker never stalls
the event loop or another call; a call cancelled by its client or by its time bound sets its
cancel flag, which ends its waits, and keeps its thread's slot until the thread ends, so live
threads never exceed TOOL_THREADS. Typed service errors become `isError` results whose text
starts with the error code and ends with what to do next.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast, get_args, get_origin

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pydantic_core
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import BaseModel, Field

from celery_mcp import __version__
from celery_mcp.config import TOOLSETS, Settings
from celery_mcp.errors import (
    INTERNAL_HINT,
    CeleryMcpError,
    InternalError,
    InvalidArgument,
    UnknownTool,
    WaitTimeout,
    detail,
)
from celery_mcp.interfaces.mcp import http_security, protocol
from celery_mcp.interfaces.mcp.schema_compact import compact_input, output_shape
from celery_mcp.interfaces.mcp.stdio import stdio_streams
from celery_mcp.models.common import ErrorDetail
from celery_mcp.runtime import timer_slack
from celery_mcp.service import cancel
from celery_mcp.service.funnel import Call, prepare
from celery_mcp.service.policy import enabled_toolsets
from celery_mcp.service.registry import OPERATIONS, Operation, offered

if TYPE_CHECKING:  # types only: the cluster module imports Celery, loaded on first call
    from celery_mcp.service.cluster import Cluster

log = logging.getLogger("celery_mcp.server")

T = TypeVar("T")

#: Worker threads for tool calls, apart from anyio's default limiter (40 threads), which the
#: SDK's stdio transport uses to read stdin and write stdout: sharing it, 40 waiting get_result
#: calls stalled every other request (a ping took 3.4 s) until one of them returned.
TOOL_THREADS = 64

INSTRUCTIONS = (
    "Operate a Celery cluster. Start with health when unsure what is running. Send work with "
    "send_task and read it back with get_result (bounded wait; call again if timed_out). "
    "Destructive tools act only with confirm=true; without it they report what they would do."
)


def instructions(settings: Settings) -> str:
    """INSTRUCTIONS, naming the toolsets this server leaves off and how to turn them on."""
    enabled = enabled_toolsets(settings, "mcp")
    off = [t for t in TOOLSETS if t not in enabled]
    if not off:
        return INSTRUCTIONS
    wanted = ",".join((*enabled, *off))
    return (
        f"{INSTRUCTIONS} Not enabled here: the {', '.join(off)} toolset(s); the operator "
        f"turns them on with CELERY_MCP_TOOLSETS={wanted} (or --toolsets all)."
    )


class LazyCluster:
    """Builds the Cluster on first use, so the server starts even when the broker is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cluster: Cluster | None = None
        self._lock = threading.Lock()
        self.threads = ThreadPoolExecutor(TOOL_THREADS, thread_name_prefix="tool")

    def get(self) -> Cluster:
        # imported here: Celery and the embedded broker are needed by the first call, not to
        # answer initialize and tools/list (measured: 95 ms of imports at start)
        from celery_mcp.runtime.connect import open_cluster

        with self._lock:
            if self._cluster is None:
                self._cluster = open_cluster(self.settings)
            return self._cluster


def _flat_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword parameter per model field, keeping its type, constraints and description."""
    params = []
    for name, field in model.model_fields.items():
        info = Field(description=field.description, title=field.title, examples=field.examples)
        annotation = cast(Any, Annotated)[(field.annotation, *field.metadata, info)]
        default = (
            inspect.Parameter.empty
            if field.is_required()
            else field.get_default(call_default_factory=True)
        )
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def _progress_bridge(
    ctx: Context, cancelled: threading.Event
) -> Callable[[float, float | None, str], None]:
    """A sync progress callback for worker threads that reports through `ctx` (call it in the
    event loop's thread: it takes the loop's token)."""
    loop = anyio.lowlevel.current_token()

    def report(progress: float, total: float | None, message: str) -> None:
        if cancelled.is_set():
            return
        try:
            anyio.from_thread.run(ctx.report_progress, progress, total, message, token=loop)
        except Exception:  # progress is best effort; never fail the call for it
            log.debug("progress report failed", exc_info=True)

    return report


def _tool_function(op: Operation, clusters: LazyCluster) -> Callable[..., Any]:
    """An async tool function with `op`'s flat arguments that calls `op` in a thread."""
    settings = clusters.settings

    async def tool(ctx: Context | None, **arguments: Any) -> BaseModel:
        try:
            prepared = prepare(op.name, settings, arguments, "mcp")
        except CeleryMcpError as exc:
            raise ToolFailure(detail(exc)) from None
        try:
            return await run_call(clusters, prepared, ctx if op.progress else None)
        except TimeoutError:
            late = WaitTimeout(
                f"{op.name} did not finish within {prepared.bound_s(settings):.1f}s",
                hint="broker, backend or workers not answering; call health",
            )
            raise ToolFailure(detail(late)) from None
        except Exception as exc:
            if not isinstance(exc, CeleryMcpError):
                log.exception("%s failed", op.name)
            raise ToolFailure(detail(exc)) from None

    ctx_param = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Context
    )
    params = [ctx_param, *_flat_parameters(op.input_model)]
    tool.__signature__ = inspect.Signature(params, return_annotation=op.output_model)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": op.output_model}
    tool.__name__ = op.name
    tool.__doc__ = op.description
    return tool


def _run(call: Call, clusters: LazyCluster, progress: Any, cancelled: threading.Event) -> BaseModel:
    with cancel.watching(cancelled):
        return call.run(clusters.get(), progress)


async def run_call(
    clusters: LazyCluster, call: Call, progress_to: Context | None = None
) -> BaseModel:
    """`call` in a worker thread under its bound (TimeoutError when it runs out), reporting
    progress through `progress_to` if given: tools and resource reads run through this."""
    cancelled = threading.Event()
    progress = _progress_bridge(progress_to, cancelled) if progress_to is not None else None
    with anyio.fail_after(call.bound_s(clusters.settings)):
        return await in_thread(
            partial(_run, call, clusters, progress, cancelled), clusters.threads, cancelled
        )


async def in_thread(
    func: Callable[[], T], executor: ThreadPoolExecutor, cancelled: threading.Event
) -> T:
    """`func()` on one of `executor`'s threads. When the caller is cancelled (the client
    cancelled the call, or its bound ran out) a call still queued never runs; a running one gets
    `cancelled` set, which ends the service's waits within `cancel.POLL_S`, and is waited for,
    so threads never exceed the executor's. (anyio's `to_thread` with a watcher task did the
    same at 3x the cost: measured 114 vs 35 us a call.)"""
    job = executor.submit(func)
    done = asyncio.wrap_future(job)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        if not job.cancel():  # running: stop it, and give its thread back before going on
            cancelled.set()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([done])
            if not done.cancelled():
                done.exception()  # retrieved: what it raised (Cancelled) is not an error here
        raise


class ToolFailure(ToolError):
    """A failed tool call, with the error every front end reports."""

    def __init__(self, error: ErrorDetail) -> None:
        super().__init__(error.text())
        self.error = error


def _error_of(name: str, exc: ToolError) -> ErrorDetail:
    """The error a failed call reports: ours, or the SDK's for a tool it does not know."""
    if isinstance(exc, ToolFailure):
        return exc.error
    if name not in OPERATIONS:
        return detail(
            UnknownTool(
                f"no tool named {name!r}", hint="tools/list shows the tools this server offers"
            )
        )
    return detail(InternalError(str(exc), hint=INTERNAL_HINT))


def tool_result(output: BaseModel) -> CallToolResult:
    """A tool's result: its output model as structured content, and as compact JSON text for
    clients that read only text."""
    data = output.model_dump(mode="json", by_alias=True)
    text = pydantic_core.to_json(data).decode()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _json_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of `model` that take a JSON array or object."""

    def takes_json(annotation: Any) -> bool:
        origin = get_origin(annotation)
        if origin in (list, dict, tuple) or (
            isinstance(annotation, type) and issubclass(annotation, BaseModel)
        ):
            return True
        return any(takes_json(arg) for arg in get_args(annotation))

    return frozenset(n for n, f in model.model_fields.items() if takes_json(f.annotation))


def error_result(error: ErrorDetail) -> CallToolResult:
    """An `isError` result: the text code first, the same error as structured content."""
    return CallToolResult(
        content=[TextContent(type="text", text=error.text())],
        structured_content={"error": error.model_dump()},
        is_error=True,
    )


def annotations_for(op: Operation) -> ToolAnnotations:
    """MCP tool annotations from an operation's safety flags.

    Only hints that differ from the spec's defaults are sent (readOnlyHint false,
    destructiveHint true, idempotentHint false, openWorldHint true): the list is sent every turn.
    """
    if op.read_only:
        return ToolAnnotations(read_only_hint=True)
    return ToolAnnotations(
        read_only_hint=False,
        destructive_hint=op.destructive,
        idempotent_hint=op.idempotent or None,
    )


class CeleryMcpServer(MCPServer):
    """MCPServer with a `tools/list` computed once (compacted schemas) and strict arguments.

    The SDK's argument model ignores unknown keys, so `{"prority": 9}` would run with the
    default priority; here an unknown argument is an `invalid_argument` error, and argument
    validation errors read like every other error (code first, no pydantic URL).
    """

    _listed: list[Tool] | None = None

    def __init__(self, settings: Settings, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings_ = settings
        self.argument_names: dict[str, frozenset[str]] = {}
        #: each offered tool's function and its arguments that take JSON arrays or objects
        self.functions: dict[str, Callable[..., Awaitable[BaseModel]]] = {}
        self.json_arguments: dict[str, frozenset[str]] = {}

    def add_operation(self, op: Operation, clusters: LazyCluster) -> None:
        """Offer `op` as a tool."""
        function = _tool_function(op, clusters)
        self.argument_names[op.name] = frozenset(op.input_model.model_fields)
        self.json_arguments[op.name] = _json_fields(op.input_model)
        self.functions[op.name] = function
        self.add_tool(
            function,
            name=op.name,
            description=op.description,
            annotations=annotations_for(op),
            structured_output=True,
        )

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> Any:
        """Our tools are called directly: the operation's model validates the arguments once
        (the SDK's argument model would validate them a second time, for 30-60 us a call)."""
        try:
            self._check_call(name, arguments)
            function = self.functions.get(name)
            if function is None:  # not a tool of ours: the SDK answers (unknown tool)
                return await super().call_tool(name, arguments, context)
            return tool_result(await function(context, **self._parsed(name, arguments)))
        except ToolError as exc:
            return error_result(_error_of(name, exc))

    def _parsed(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """`arguments` with JSON text decoded where an array or object is expected: some
        clients (Claude Desktop) send `"[1, 2]"` for `[1, 2]` (the SDK does the same)."""
        wanted = self.json_arguments[name]
        parsed = dict(arguments)
        for key, value in arguments.items():
            if key in wanted and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    decoded = json.loads(value)
                    if isinstance(decoded, list | dict):
                        parsed[key] = decoded
        return parsed

    def _check_call(self, name: str, arguments: dict[str, Any]) -> None:
        """Refuse a tool this server does not offer (saying which toolset has it) and unknown
        arguments (naming the ones it takes)."""
        if name in OPERATIONS and name not in self.argument_names:
            try:
                prepare(name, self.settings_, arguments, "mcp")
            except CeleryMcpError as exc:
                raise ToolFailure(detail(exc)) from None
        allowed = self.argument_names.get(name)
        unknown = sorted(set(arguments) - allowed) if allowed is not None else []
        if unknown:
            refused = InvalidArgument(
                f"unknown argument(s) {', '.join(map(repr, unknown))} for {name}",
                hint=f"it takes: {', '.join(sorted(allowed or ())) or 'no arguments'}",
            )
            raise ToolFailure(detail(refused))

    async def run_stdio_async(self) -> None:
        """Serve over stdio on the event loop's own pipes (`stdio.stdio_streams`)."""
        async with stdio_streams() as (read_stream, write_stream):
            await self._lowlevel_server.run(
                read_stream, write_stream, self._lowlevel_server.create_initialization_options()
            )

    async def list_tools(self) -> list[Tool]:
        if self._listed is None:
            self._listed = [
                tool.model_copy(
                    update={
                        "input_schema": compact_input(tool.input_schema),
                        "output_schema": output_shape(tool.output_schema),
                    }
                )
                for tool in await super().list_tools()
            ]
        return self._listed


def build_server(settings: Settings) -> MCPServer:
    """An MCPServer exposing the operations `settings` selects (toolsets, read-only)."""
    clusters = LazyCluster(settings)
    server = CeleryMcpServer(
        settings,
        name="celery-mcp",
        version=__version__,
        instructions=instructions(settings),
        log_level="WARNING",
    )
    for op in offered(settings, "mcp"):
        server.add_operation(op, clusters)
    protocol.register(server, settings, partial(run_call, clusters), clusters.get)
    return server


def http_app(settings: Settings, server: MCPServer) -> Any:
    """The streamable HTTP ASGI app: Host/Origin allow-lists always on, bearer token if set.

    The SDK checks Host/Origin only when it is bound to a loopback name and given no settings,
    so settings are always passed. The token is checked by a small ASGI middleware in front of
    everything (`security.BearerTokenMiddleware`) rather than the SDK's OAuth hooks, which
    need an authorization server URL a static token does not have.
    """
    guard = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=http_security.allowed_hosts(settings),
        allowed_origins=http_security.allowed_origins(settings),
    )
    app: Any = server.streamable_http_app(transport_security=guard, host=settings.host)
    if settings.auth_token is not None:
        app = http_security.BearerTokenMiddleware(app, settings.auth_token.get_secret_value())
    return app


def run(
    settings: Settings,
    transport: str = "stdio",
    *,
    sock: socket.socket | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve over `transport` ('stdio' or 'http') until the client or a signal stops it.

    HTTP serves on `sock` when given (bound by the caller, so a taken port fails before
    anything else starts) and calls `on_ready` once it accepts requests."""
    timer_slack.tighten()  # before the server starts a thread: they inherit it
    if transport == "stdio":
        build_server(settings).run("stdio")
        return
    import uvicorn  # HTTP only: stdio never pays for it

    http_security.check_bind(settings)  # refuses a non-loopback bind without a token
    app = http_app(settings, build_server(settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn logs go through the root handler, which redacts
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=2,  # open SSE streams must not hold a shutdown
        server_header=False,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                on_ready()

    Server(config).run(sockets=[sock] if sock is not None else None)
