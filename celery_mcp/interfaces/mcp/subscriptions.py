"""Resource subscriptions in both protocol eras, fed by one `TaskWatch`.

Subscribable: `celery://tasks/{task_id}` and `celery://workflows/{workflow_id}` (a workflow
watches each of its tasks). Two ways in, one bookkeeping:

- 2025-11-25 and earlier: `resources/subscribe` / `resources/unsubscribe`; an update is a
  `notifications/resources/updated` on the connection's standalone stream. A connection's
  subscriptions end with it (its `exit_stack`).
- 2026-07-28: a `subscriptions/listen` stream whose filter names the URIs; the stream's
  lifetime is the subscription. The SDK's `ListenHandler` serves the stream from our bus; the
  URIs are watched while it runs.

The watch's listener thread reports a stored state change; the loop then sends one
notification per subscriber (bounded by `SEND_S`). No loop runs per subscription.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    ResourceUpdated,
    ServerEvent,
)
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)

from celery_mcp.config import Settings
from celery_mcp.errors import CeleryMcpError, translate_errors
from celery_mcp.service.funnel import prepare

if TYPE_CHECKING:
    from mcp.server.connection import Connection
    from mcp.server.context import ServerRequestContext

    from celery_mcp.service.cluster import Cluster
    from celery_mcp.service.watch import TaskWatch

log = logging.getLogger("celery_mcp.server")

T = TypeVar("T")

#: Longest one notification may take to write before it is given up.
SEND_S = 1.0
#: Threads for watch set-up (workflow lookups, subscribe round trips).
WATCH_THREADS = 8
#: Most URIs one connection (2025-11-25) or one listen stream (2026-07-28) may watch.
MAX_PER_SUBSCRIBER = 1_000

#: The read each kind of subscription stands for: (operation, its id field). A subscription's
#: id is checked through the funnel like that read.
READS = {"tasks": ("get_status", "task_id"), "workflows": ("get_workflow", "workflow_id")}

SUBSCRIBABLE = re.compile(r"^celery://(tasks|workflows)/([^/?#]+)$")
_STATE_KEY = "celery_mcp.subscriptions"


def _parse(uri: str) -> tuple[str, str] | None:
    """('tasks' or 'workflows', id) of a subscribable URI, else None."""
    match = SUBSCRIBABLE.match(uri)
    return (match.group(1), match.group(2)) if match else None


def _connection(ctx: ServerRequestContext[Any, Any]) -> Connection:
    # The SDK hands handlers a per-request session; the connection (with its state and
    # teardown stack) is what outlives it. There is no public accessor in mcp 2.3.
    connection: Connection = ctx.session._connection
    return connection


class JoinBus(InMemorySubscriptionBus):
    """The in-process bus, telling when the next listener joins."""

    def __init__(self) -> None:
        super().__init__()
        self._joins: list[anyio.Event] = []

    def next_join(self) -> anyio.Event:
        event = anyio.Event()
        self._joins.append(event)
        return event

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        joins, self._joins = self._joins, []
        for event in joins:
            event.set()
        return unsubscribe


class Subscriptions:
    """Who is subscribed to which URI, and the one watch that tells when it changes."""

    def __init__(self, settings: Settings, get_cluster: Callable[[], Cluster]) -> None:
        self.settings = settings
        self.bus = JoinBus()
        self._listen_setup = anyio.Lock()
        self.listen_handler = ListenHandler(self.bus)
        self._get_cluster = get_cluster
        self._watch: TaskWatch | None = None
        self._watch_lock = threading.Lock()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._threads = anyio.CapacityLimiter(WATCH_THREADS)
        self._refs: dict[str, int] = {}  # uri -> subscribers (connections and streams)
        self._ids: dict[str, list[str]] = {}  # uri -> task ids it watches
        self._uris: dict[str, set[str]] = {}  # task id -> uris
        self._connections: dict[str, set[Connection]] = {}  # uri -> 2025-era subscribers

    @property
    def watched(self) -> dict[str, int]:
        """Watchers per task id (for tests and diagnostics)."""
        return self._watch.watched if self._watch is not None else {}

    # -- bookkeeping (event loop only)

    def _check(self, uri: str) -> tuple[str, str]:
        """(kind, id) of a subscribable URI, its id checked through the funnel like a read of
        the resource (toolsets, the id's form): else an invalid-params error saying why."""
        parsed = _parse(uri)
        if parsed is None:
            raise MCPError(
                INVALID_PARAMS,
                f"cannot subscribe to {uri!r}: only celery://tasks/{{task_id}} and "
                "celery://workflows/{workflow_id} change on their own; read the others again",
            )
        kind, ident = parsed
        operation, field = READS[kind]
        try:
            prepare(operation, self.settings, {field: ident}, "mcp")
        except CeleryMcpError as exc:
            message = f"cannot subscribe to {uri!r}: {exc.code}: {exc}"
            raise MCPError(INVALID_PARAMS, message) from None
        return parsed

    async def add(self, uri: str) -> None:
        """One more subscriber of `uri`: from the first, its tasks are watched (the ids are
        mapped to `uri` before the watch starts, so its first report finds them)."""
        kind, ident = self._check(uri)
        if self._refs.get(uri):
            self._refs[uri] += 1
            return
        self._token = self._token or anyio.lowlevel.current_token()
        self._refs[uri] = 1  # before the waits: a second subscriber meanwhile only counts
        try:
            with anyio.fail_after(self.settings.call_timeout_s):
                ids = await self._in_thread(self._task_ids, kind, ident)
                self._ids[uri] = ids
                for task_id in ids:
                    self._uris.setdefault(task_id, set()).add(uri)
                await self._in_thread(self._start_watching, ids)
        except BaseException as exc:
            self._forget(uri)
            if isinstance(exc, CeleryMcpError):
                raise MCPError(INVALID_PARAMS, f"{exc.code}: {exc}") from None
            if isinstance(exc, TimeoutError):
                raise MCPError(
                    INTERNAL_ERROR, f"timeout: subscribing to {uri} took over its bound"
                ) from None
            raise

    def _forget(self, uri: str) -> list[str]:
        """Drop `uri`'s bookkeeping; return the task ids it watched."""
        ids = self._forget(uri)
        return ids

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    async def remove(self, uri: str) -> None:
        """One subscriber fewer; the last one stops watching `uri`'s tasks."""
        left = self._refs.get(uri, 0) - 1
        if left > 0:
            self._refs[uri] = left
            return
        self._refs.pop(uri, None)
        ids = self._ids.pop(uri, [])
        for task_id in ids:
            uris = self._uris.get(task_id, set())
            uris.discard(uri)
            if not uris:
                self._uris.pop(task_id, None)
        if ids and self._watch is not None:
            watch = self._watch

            def unwatch_all() -> None:
                for task_id in ids:
                    watch.unwatch(task_id)

            with anyio.move_on_after(self.settings.call_timeout_s):
                await self._in_thread(unwatch_all)

    # -- the watch (worker threads)

    def _task_ids(self, kind: str, ident: str) -> list[str]:
        """The task ids a subscription watches: the task, or the workflow's every task."""
        if kind != "workflows":
            return [ident]
        from celery_mcp.service.workflows import member_ids  # Celery: on first use

        with translate_errors("backend"):
            return list(dict.fromkeys([ident, *member_ids(self._get_cluster(), ident)]))

    def _start_watching(self, ids: list[str]) -> None:
        cluster = self._get_cluster()
        with translate_errors("backend"):
            with self._watch_lock:
                if self._watch is None:
                    from celery_mcp.service.watch import TaskWatch  # Celery: on first use

                    self._watch = TaskWatch(cluster, self._changed)
            for task_id in ids:
                self._watch.watch(task_id)

    def _changed(self, task_id: str, state: str) -> None:
        """The watch's callback (its thread): notify on the loop."""
        token = self._token
        if token is None:
            return
        try:
            anyio.from_thread.run(self._notify, task_id, token=token)
        except Exception:  # the loop is gone (server stopping): nobody to tell
            log.debug("notification for %s not delivered", task_id, exc_info=True)

    async def _notify(self, task_id: str) -> None:
        for uri in sorted(self._uris.get(task_id, ())):
            await self.bus.publish(ResourceUpdated(uri=uri))
            for connection in list(self._connections.get(uri, ())):
                with anyio.move_on_after(SEND_S):
                    await connection.send_resource_updated(uri)

    # -- request handlers

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        """`resources/subscribe` (2025-11-25 era): idempotent per connection."""
        uri, connection = str(params.uri), _connection(ctx)
        mine: set[str] | None = connection.state.get(_STATE_KEY)
        if mine is None:
            mine = connection.state[_STATE_KEY] = set()
            connection.exit_stack.push_async_callback(self._disconnected, connection)
        if uri not in mine and len(mine) >= MAX_PER_SUBSCRIBER:
            raise MCPError(
                INVALID_PARAMS,
                f"this connection already watches {len(mine)} resources (the most); "
                "unsubscribe from finished ones first",
            )
        if uri not in mine:  # registered first: the watch may report before add returns
            self._connections.setdefault(uri, set()).add(connection)
            try:
                await self.add(uri)
            except BaseException:
                self._unlist(uri, connection)
                raise
            mine.add(uri)
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        """`resources/unsubscribe`: a URI this connection did not subscribe to is a no-op."""
        uri, connection = str(params.uri), _connection(ctx)
        mine: set[str] = connection.state.get(_STATE_KEY, set())
        if uri in mine:
            mine.discard(uri)
            await self._drop(uri, connection)
        return EmptyResult()

    def _unlist(self, uri: str, connection: Connection) -> None:
        subscribers = self._connections.get(uri, set())
        subscribers.discard(connection)
        if not subscribers:
            self._connections.pop(uri, None)

    async def _drop(self, uri: str, connection: Connection) -> None:
        self._unlist(uri, connection)
        await self.remove(uri)

    async def _disconnected(self, connection: Connection) -> None:
        mine: set[str] = connection.state.pop(_STATE_KEY, set())
        for uri in sorted(mine):
            await self._drop(uri, connection)

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        """`subscriptions/listen` (2026-07-28): the SDK's handler serves the stream from our
        bus; the filter's URIs are watched once it listens on the bus (so the first report,
        e.g. of a task already finished, reaches it) and until the stream ends."""
        wanted = list(
            dict.fromkeys(u for u in params.notifications.resource_subscriptions or () if _parse(u))
        )
        if len(wanted) > MAX_PER_SUBSCRIBER:
            raise MCPError(
                INVALID_PARAMS,
                f"a listen stream watches at most {MAX_PER_SUBSCRIBER} resources, got "
                f"{len(wanted)}; open several streams",
            )
        for uri in wanted:  # refused before the stream opens, as the request's error
            self._check(uri)
        result: list[SubscriptionsListenResult] = []

        async def serve() -> None:
            result.append(await self.listen_handler(ctx, params))

        added: list[str] = []
        try:
            async with anyio.create_task_group() as group:
                async with self._listen_setup:
                    joined = self.bus.next_join()
                    group.start_soon(serve)
                    with anyio.move_on_after(SEND_S):
                        await joined.wait()
                for uri in wanted:
                    await self.add(uri)
                    added.append(uri)
        finally:
            with anyio.CancelScope(shield=True):
                for uri in added:
                    await self.remove(uri)
        return result[0]

    def close(self) -> None:
        """End every listen stream and stop the watch."""
        self.listen_handler.close()
        if self._watch is not None:
            self._watch.close()
