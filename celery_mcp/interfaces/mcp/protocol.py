"""Everything the server offers besides tools: resources, prompts, completions, subscriptions,
resource links in tool results, cache hints and capabilities that say what is true.

`register` is the one hook `server.build_server` calls. It reaches the SDK's low-level server
(`MCPServer._lowlevel_server`, which mcp 2.3 exposes no other way) for three things only: the
subscription request handlers, the cache hints, and the capabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.caching import CacheHint
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.types import (
    ServerCapabilities,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    UnsubscribeRequestParams,
)

from celery_mcp.config import Settings
from celery_mcp.interfaces.mcp.completions import Completer, argument_kinds, register_completions
from celery_mcp.interfaces.mcp.prompts import register_prompts
from celery_mcp.interfaces.mcp.resources import MIME, Runner, register_resources
from celery_mcp.interfaces.mcp.subscriptions import SUBSCRIBABLE, Subscriptions
from celery_mcp.service.views import View
from celery_mcp.stores.clients import is_redis_url

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

    from celery_mcp.service.cluster import Cluster

#: The tool, prompt and resource lists are fixed when the process starts: a day is as true as
#: forever and lets a client re-check once in a while. A read is live data: never fresh.
STATIC_MS = 86_400_000
CACHE_HINTS: dict[str, CacheHint] = {
    "tools/list": CacheHint(ttl_ms=STATIC_MS),
    "prompts/list": CacheHint(ttl_ms=STATIC_MS),
    "resources/list": CacheHint(ttl_ms=STATIC_MS),
    "resources/templates/list": CacheHint(ttl_ms=STATIC_MS),
    "server/discover": CacheHint(ttl_ms=STATIC_MS),
    "resources/read": CacheHint(ttl_ms=0),
}

#: Result fields holding an id, and the view template each links to.
LINKED_FIELDS: dict[str, str] = {
    "task_id": "celery://tasks/{task_id}",
    "new_task_id": "celery://tasks/{task_id}",
    "last_task_id": "celery://tasks/{task_id}",
    "workflow_id": "celery://workflows/{workflow_id}",
}
#: Tools whose result's `name` is a periodic task's entry name.
ENTRY_NAME_TOOLS = frozenset(
    {
        "add_periodic_task",
        "update_periodic_task",
        "enable_periodic_task",
        "disable_periodic_task",
        "get_periodic_task",
        "run_periodic_task_now",
    }
)
ENTRY_TEMPLATE = "celery://schedules/{name}"

#: The first protocol version with `resource_link` content blocks.
LINKS_SINCE = "2025-06-18"


@dataclass(frozen=True)
class Protocol:
    """What `register` added (tests and the server's shutdown use it)."""

    views: list[View]
    subscriptions: Subscriptions
    completer: Completer


def _lowlevel(server: MCPServer) -> Server[Any]:
    low: Server[Any] = server._lowlevel_server
    return low


def truthful_capabilities(low: Server[Any], subscribable: bool) -> None:
    """Capabilities that promise only what happens, in both eras: no list ever changes (so no
    listChanged), and resources.subscribe only when a subscribable resource is offered. The
    SDK derives every 2026-07-28 flag from `subscriptions/listen` being served."""
    derive = low.get_capabilities

    def get_capabilities(*args: Any, **kwargs: Any) -> ServerCapabilities:
        caps = derive(*args, **kwargs)
        update: dict[str, Any] = {}
        for name in ("tools", "prompts"):
            if getattr(caps, name) is not None:
                update[name] = getattr(caps, name).model_copy(update={"list_changed": False})
        if caps.resources is not None:
            update["resources"] = caps.resources.model_copy(
                update={"list_changed": False, "subscribe": subscribable}
            )
        return caps.model_copy(update=update)

    low.get_capabilities = get_capabilities  # type: ignore[method-assign]


def resource_links(views: list[View]) -> Callable[..., Any]:
    """Middleware adding a `resource_link` to each tool result field that holds an id whose
    view is offered (`celery://tasks/{id}`, `celery://workflows/{id}`, and a schedule tool's
    entry `celery://schedules/{name}`)."""
    offered = {v.uri for v in views}
    fields = {f: t for f, t in LINKED_FIELDS.items() if t in offered}
    entry_fields = {**fields, "name": ENTRY_TEMPLATE} if ENTRY_TEMPLATE in offered else fields

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if (
            ctx.method == "tools/call"
            and ctx.protocol_version >= LINKS_SINCE
            and isinstance(result, dict)
            and not result.get("isError")
        ):
            tool = (ctx.params or {}).get("name")
            links = _links(
                result.get("structuredContent"),
                entry_fields if tool in ENTRY_NAME_TOOLS else fields,
            )
            if links and isinstance(result.get("content"), list):
                result = {**result, "content": [*result["content"], *links]}
        return result

    return middleware


def _links(structured: Any, fields: Mapping[str, str]) -> list[dict[str, Any]]:
    if not isinstance(structured, dict):
        return []
    links: dict[str, dict[str, Any]] = {}
    for field, template in fields.items():
        ident = structured.get(field)
        if isinstance(ident, str) and ident:
            variable = template.rsplit("{", 1)[1].rstrip("}")
            uri = template.replace("{" + variable + "}", ident)
            links.setdefault(
                uri,
                {
                    "type": "resource_link",
                    "uri": uri,
                    "name": f"{template.split('/')[2].removesuffix('s')} {ident}",
                    "mimeType": MIME,
                },
            )
    return list(links.values())


def backend_publishes(settings: Settings) -> bool:
    """False when the result backend surely cannot publish state changes (a URL that is not
    Redis/Valkey, e.g. rpc://); a user app's own backend is known only once it loads."""
    if settings.app is not None and settings.result_backend is None:
        return True
    if settings.result_backend is not None:
        return is_redis_url(settings.result_backend)
    return settings.broker_url is None or is_redis_url(settings.broker_url)


def register(
    server: MCPServer, settings: Settings, runner: Runner, get_cluster: Callable[[], Cluster]
) -> Protocol:
    """Add resources, prompts, completions and subscriptions to `server` under `settings`."""
    views = register_resources(server, settings, runner)
    procedures = register_prompts(server, settings)
    completer = Completer(settings, get_cluster, argument_kinds(views, procedures))
    register_completions(server, completer)

    low = _lowlevel(server)
    subscriptions = Subscriptions(settings, get_cluster)
    subscribable = any(SUBSCRIBABLE.match(v.uri.replace("{", "x").replace("}", "")) for v in views)
    if subscribable:
        low.add_request_handler(
            "resources/subscribe", SubscribeRequestParams, subscriptions.subscribe
        )
        low.add_request_handler(
            "resources/unsubscribe", UnsubscribeRequestParams, subscriptions.unsubscribe
        )
    low.add_request_handler(
        "subscriptions/listen", SubscriptionsListenRequestParams, subscriptions.listen
    )
    low.cache_hints.update(CACHE_HINTS)
    truthful_capabilities(low, subscribable)
    server.middleware.append(resource_links(views))
    return Protocol(views=views, subscriptions=subscriptions, completer=completer)
