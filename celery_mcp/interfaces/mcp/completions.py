"""`completion/complete`: names for prompt arguments and resource template variables.

Which names an argument takes comes from the tables (`views.View.variables`,
`prompts.Argument.kind`); the names come from `service.suggestions`, served from its cache. Only
the first request of a kind waits, bounded, for the first read; later ones answer at once and a
stale list is refreshed in the background (no broadcast per keystroke).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
)

from celery_mcp.config import Settings
from celery_mcp.interfaces.mcp.prompts import Procedure
from celery_mcp.service.suggestions import Suggestions, matching
from celery_mcp.service.views import Kind, View

if TYPE_CHECKING:
    from celery_mcp.service.cluster import Cluster

log = logging.getLogger("celery_mcp.server")

#: Threads for first reads (one per kind at most).
READ_THREADS = 5


def argument_kinds(
    views: list[View], procedures: list[Procedure]
) -> dict[tuple[str, str, str], Kind]:
    """(ref type, template URI or prompt name, argument) -> the kind of names it takes."""
    kinds: dict[tuple[str, str, str], Kind] = {}
    for view in views:
        for variable, (_, kind) in view.variables.items():
            kinds[("ref/resource", view.uri, variable)] = kind
    for procedure in procedures:
        for arg in procedure.arguments:
            if arg.kind is not None:
                kinds[("ref/prompt", procedure.name, arg.name)] = arg.kind
    return kinds


class Completer:
    """Answers completion requests from `Suggestions`."""

    def __init__(
        self,
        settings: Settings,
        get_cluster: Callable[[], Cluster],
        kinds: dict[tuple[str, str, str], Kind],
    ) -> None:
        self.settings = settings
        self.kinds = kinds
        self.suggestions = Suggestions(get_cluster)
        self._threads = anyio.CapacityLimiter(READ_THREADS)

    async def names(self, kind: Kind) -> list[str]:
        cached = self.suggestions.cached(kind)
        if cached is not None:
            return cached
        try:
            with anyio.fail_after(self.settings.call_timeout_s):
                return await anyio.to_thread.run_sync(
                    self.suggestions.read, kind, limiter=self._threads
                )
        except Exception:  # completion is best effort: nothing to offer, not an error
            log.debug("reading %s names failed", kind, exc_info=True)
            return []

    async def complete(
        self,
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        key = (
            ("ref/prompt", ref.name, argument.name)
            if isinstance(ref, PromptReference)
            else ("ref/resource", ref.uri, argument.name)
        )
        kind = self.kinds.get(key)
        if kind is None:
            return Completion(values=[])
        values, total = matching(await self.names(kind), argument.value)
        return Completion(values=values, total=total, has_more=total > len(values))


def register_completions(server: MCPServer, completer: Completer) -> None:
    """Serve `completion/complete` with `completer`."""
    server.completion()(completer.complete)  # type: ignore[no-untyped-call]
