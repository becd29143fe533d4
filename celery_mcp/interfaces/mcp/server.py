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

import inspect
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import Tool, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from celery_mcp import __version__
from celery_mcp.config import Settings, redact_url
from celery_mcp.errors import CeleryMcpError, validation_message
from celery_mcp.interfaces.mcp import http_security, protocol
from celery_mcp.interfaces.mcp.schema_compact import compact_input, output_shape
from celery_mcp.service import cancel
from celery_mcp.service.registry import OPERATIONS, Call, Operation, offered, prepare

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


class LazyCluster:
    """Builds the Cluster on first use, so the server starts even when the broker is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cluster: Cluster | None = None
        self._lock = threading.Lock()
        self.threads = anyio.CapacityLimiter(TOOL_THREADS)

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
    """A sync progress callback for worker threads that reports through `ctx`."""

    def report(progress: float, total: float | None, message: str) -> None:
        if cancelled.is_set():
            return
        try:
            anyio.from_thread.run(ctx.report_progress, progress, total, message)
        except Exception:  # progress is best effort; never fail the call for it
            log.debug("progress report failed", exc_info=True)

    return report


def _tool_function(op: Operation, clusters: LazyCluster) -> Callable[..., Any]:
    """An async tool function with `op`'s flat arguments that calls `op` in a thread."""
    settings = clusters.settings

    async def tool(ctx: Context, **arguments: Any) -> BaseModel:
        try:
            prepared = prepare(op.name, settings, arguments, "mcp")
        except CeleryMcpError as exc:
            raise ToolError(f"{exc.code}: {exc}") from None
        bound = prepared.bound_s(settings)
        cancelled = threading.Event()
        progress = _progress_bridge(ctx, cancelled) if op.progress else None
        run = partial(_run, prepared, clusters, progress, cancelled)
        try:
            with anyio.fail_after(bound):
                return await in_thread(run, clusters.threads, cancelled)
        except TimeoutError:
            raise ToolError(
                f"timeout: {op.name} did not finish within {bound:.1f}s "
                "(broker, backend or workers not answering; call health)"
            ) from None
        except CeleryMcpError as exc:
            raise ToolError(f"{exc.code}: {exc}") from None
        except Exception as exc:
            log.exception("%s failed", op.name)
            raise ToolError(
                f"internal_error: {type(exc).__name__}: {redact_url(str(exc))}"
            ) from None

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


async def run_call(clusters: LazyCluster, call: Call) -> BaseModel:
    """`call` in a worker thread under its bound (TimeoutError when it runs out): resources
    read through this, so they run like tools."""
    cancelled = threading.Event()
    with anyio.fail_after(call.bound_s(clusters.settings)):
        return await in_thread(
            partial(_run, call, clusters, None, cancelled), clusters.threads, cancelled
        )


async def in_thread(
    func: Callable[[], T], limiter: anyio.CapacityLimiter, cancelled: threading.Event
) -> T:
    """`func()` in a worker thread under `limiter`. When the caller is cancelled (the client
    cancelled the call, or its bound ran out) `cancelled` is set, which ends the service's waits
    within `cancel.POLL_S`; the thread keeps its slot until it ends, then the cancellation goes
    on."""

    async def flag_on_cancel() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    error: Exception | None = None
    async with anyio.create_task_group() as watch:
        watch.start_soon(flag_on_cancel)
        try:  # not abandoned on cancel: a thread running on would hold no slot
            value = await anyio.to_thread.run_sync(func, limiter=limiter)
        except Exception as exc:  # raised below, not wrapped in the task group's group
            error = exc
        watch.cancel_scope.cancel()
    await anyio.lowlevel.checkpoint_if_cancelled()
    if error is not None:
        raise error
    return value


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

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> Any:
        if name in OPERATIONS and name not in self.argument_names:
            try:  # a tool this server does not offer: say which toolset has it
                prepare(name, self.settings_, arguments, "mcp")
            except CeleryMcpError as exc:
                raise ToolError(f"{exc.code}: {exc}") from None
        allowed = self.argument_names.get(name)
        unknown = sorted(set(arguments) - allowed) if allowed is not None else []
        if unknown:
            raise ToolError(
                f"invalid_argument: unknown argument(s) {', '.join(map(repr, unknown))} for "
                f"{name}; it takes: {', '.join(sorted(allowed or ())) or 'no arguments'}"
            )
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(f"invalid_argument: {validation_message(exc.__cause__)}") from None
            raise

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
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )
    for op in offered(settings, "mcp"):
        server.argument_names[op.name] = frozenset(op.input_model.model_fields)
        server.add_tool(
            _tool_function(op, clusters),
            name=op.name,
            description=op.description,
            annotations=annotations_for(op),
            structured_output=True,
        )
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


def run(settings: Settings, transport: str = "stdio") -> None:
    """Serve over `transport` ('stdio' or 'http') until the client or a signal stops it."""
    if transport == "stdio":
        build_server(settings).run("stdio")
        return
    import uvicorn  # HTTP only: stdio never pays for it

    http_security.check_bind(
        settings
    )  # refuses a non-loopback bind without a token, before binding
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
    uvicorn.Server(config).run()
