"""A call's cancel flag, which every wait of the service layer checks, and its progress callback.

A front end that can cancel a call (the MCP server: the client cancelled it, or its time bound
ran out) runs it inside `watching(event)` and sets `event`; waits then raise `Cancelled` within
`POLL_S`, so the call's thread ends and gives its slot back. Without a flag nothing is
cancelled: the facade and the CLI wait as before. A front end that can report progress hands a
long operation a `Progress` callback, which its waits call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from celery_mcp.errors import Cancelled

#: Longest a wait goes without looking at its call's cancel flag.
POLL_S = 0.05


class Progress(Protocol):
    """Progress callback given to long operations: (done, total, message)."""

    def __call__(self, progress: float, total: float | None, message: str) -> None: ...


_flag: ContextVar[threading.Event | None] = ContextVar("celery_mcp_cancel", default=None)


@contextmanager
def watching(event: threading.Event) -> Iterator[threading.Event]:
    """Make `event` the cancel flag of the code run inside (this thread's context)."""
    token = _flag.set(event)
    try:
        yield event
    finally:
        _flag.reset(token)


def requested() -> bool:
    """True when the current call has been cancelled."""
    event = _flag.get()
    return event is not None and event.is_set()


def check() -> None:
    """Raise Cancelled when the current call has been cancelled."""
    if requested():
        raise Cancelled(
            "the call was cancelled (by the client, or at its time bound) before its wait ended",
            hint="call again; the task itself is not affected",
        )


def sleep(seconds: float) -> None:
    """time.sleep that ends early, raising Cancelled, when the current call is cancelled."""
    event = _flag.get()
    if event is None:
        time.sleep(max(0.0, seconds))
    else:
        event.wait(max(0.0, seconds))
    check()


def wait(event: threading.Event, timeout_s: float) -> bool:
    """`event.wait(timeout_s)`, looking at the current call's cancel flag every POLL_S."""
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        remaining = deadline - time.monotonic()
        if event.wait(min(POLL_S, max(0.0, remaining))):
            return True
        if remaining <= POLL_S:
            return False
