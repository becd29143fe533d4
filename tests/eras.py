"""One test client over both protocol eras, to run the same checks on each.

- "2025-11-25": the classic `ClientSession` after `initialize`; subscriptions are
  `resources/subscribe` and arrive as `notifications/resources/updated` on the session.
- "2026-07-28": `mcp.Client(mode="auto")`, which negotiates the stateless era through
  `server/discover`; subscriptions are one `subscriptions/listen` stream.

Both talk to a real `celery-mcp serve` process over stdio (or HTTP with `url`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
from mcp import Client, ClientSession
from mcp.client.stdio import stdio_client
from mcp.types import (
    CallToolResult,
    CompleteResult,
    GetPromptResult,
    PromptReference,
    ReadResourceResult,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    ServerCapabilities,
    TextResourceContents,
)

from tests.support import server_params

ERAS = ("2025-11-25", "2026-07-28")


class Updates:
    """URIs reported updated, each with the wall-clock time it arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, list[float]] = {}
        self._changed = anyio.Event()

    def note(self, uri: str) -> None:
        self.arrived.setdefault(uri, []).append(time.time())
        self._changed.set()

    async def wait_for(self, uris: Sequence[str], timeout_s: float) -> dict[str, float]:
        """The first arrival time of each of `uris` (fails after `timeout_s`)."""
        with anyio.fail_after(timeout_s):
            while not all(u in self.arrived for u in uris):
                self._changed = anyio.Event()
                await self._changed.wait()
        return {u: self.arrived[u][0] for u in uris}

    async def wait_after(self, after: Mapping[str, float], timeout_s: float) -> dict[str, float]:
        """Per URI, the first arrival at or after its time in `after` (fails after
        `timeout_s`): the notification of a change made at that time."""

        def found() -> dict[str, float] | None:
            first = {
                u: min((t for t in self.arrived.get(u, ()) if t >= at), default=None)
                for u, at in after.items()
            }
            return None if None in first.values() else first  # type: ignore[return-value]

        with anyio.fail_after(timeout_s):
            while (first := found()) is None:
                self._changed = anyio.Event()
                await self._changed.wait()
        return first


class EraClient:
    """The calls the tests make, over either era."""

    def __init__(self, era: str, session: ClientSession, client: Client | None) -> None:
        self.era = era
        self.session = session
        self.client = client
        self.updates = Updates()

    @property
    def capabilities(self) -> ServerCapabilities:
        if self.client is not None:
            return self.client.server_capabilities
        caps = self.session.server_capabilities
        assert caps is not None
        return caps

    @property
    def protocol_version(self) -> str:
        return self.client.protocol_version if self.client is not None else self.era

    async def read_json(self, uri: str) -> Any:
        import json

        result = await self.read(uri)
        (content,) = result.contents
        assert isinstance(content, TextResourceContents)
        assert content.mime_type == "application/json"
        return json.loads(content.text)

    async def read(self, uri: str) -> ReadResourceResult:
        if self.client is not None:
            return await self.client.read_resource(uri)
        return await self.session.read_resource(uri)

    async def call(self, tool: str, progress: Any = None, **arguments: Any) -> CallToolResult:
        if self.client is not None:
            result = await self.client.call_tool(tool, arguments, progress_callback=progress)
        else:
            result = await self.session.call_tool(tool, arguments, progress_callback=progress)
        assert isinstance(result, CallToolResult)
        return result

    async def complete_prompt(self, prompt: str, argument: str, value: str) -> CompleteResult:
        ref = PromptReference(type="ref/prompt", name=prompt)
        return await self._complete(ref, argument, value)

    async def complete_template(self, uri: str, argument: str, value: str) -> CompleteResult:
        ref = ResourceTemplateReference(type="ref/resource", uri=uri)
        return await self._complete(ref, argument, value)

    async def _complete(
        self, ref: PromptReference | ResourceTemplateReference, argument: str, value: str
    ) -> CompleteResult:
        arg = {"name": argument, "value": value}
        if self.client is not None:
            return await self.client.complete(ref, arg)
        return await self.session.complete(ref, arg)

    async def get_prompt(self, name: str, arguments: dict[str, str]) -> GetPromptResult:
        if self.client is not None:
            return await self.client.get_prompt(name, arguments)
        return await self.session.get_prompt(name, arguments)

    @contextlib.asynccontextmanager
    async def subscribed(self, uris: Sequence[str]) -> AsyncIterator[Updates]:
        """Subscribed to `uris` inside the block (listen stream or subscribe calls)."""
        if self.client is None:
            for uri in uris:
                await self.session.subscribe_resource(uri)
            try:
                yield self.updates
            finally:
                for uri in uris:
                    await self.session.unsubscribe_resource(uri)
            return
        async with (
            self.client.listen(resource_subscriptions=list(uris)) as sub,
            anyio.create_task_group() as group,
        ):

            async def pump() -> None:
                async for event in sub:
                    uri = getattr(event, "uri", None)
                    if uri is not None:
                        self.updates.note(uri)

            group.start_soon(pump)
            yield self.updates
            group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def era_client(
    env: Mapping[str, str], era: str, *extra: str, url: str | None = None
) -> AsyncIterator[EraClient]:
    """An `EraClient` speaking `era`: on a fresh `celery-mcp serve` over stdio, or on the HTTP
    server at `url`."""
    if era == "2026-07-28":
        target: Any = url if url is not None else server_params(env, *extra)
        async with Client(target, mode="auto") as client:
            assert client.protocol_version == era, client.protocol_version
            yield EraClient(era, client.session, client)
        return
    holder: list[EraClient] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification) and holder:
            holder[0].updates.note(str(message.params.uri))

    async with contextlib.AsyncExitStack() as stack:
        if url is None:
            errlog = stack.enter_context(
                open(os.environ.get("CELERY_MCP_TEST_ERRLOG", os.devnull), "a")  # noqa: SIM115
            )
            read, write = await stack.enter_async_context(
                stdio_client(server_params(env, *extra), errlog=errlog)
            )
        else:
            from mcp.client.streamable_http import streamable_http_client

            read, write = await stack.enter_async_context(streamable_http_client(url))
        session = await stack.enter_async_context(
            ClientSession(read, write, message_handler=on_message)
        )
        init = await session.initialize()
        assert init.protocol_version == era, init.protocol_version
        holder.append(EraClient(era, session, None))
        yield holder[0]
