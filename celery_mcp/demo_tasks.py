"""Demo tasks for the quick start and the tests (registered on any app as `demo.*`)."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from celery_mcp.stores.keys import DEMO_FLAKY_PREFIX


@shared_task(name="demo.add")
def add(x: int, y: int) -> int:
    """Add two integers."""
    return x + y


@shared_task(name="demo.mul")
def mul(x: int, y: int) -> int:
    """Multiply two integers."""
    return x * y


@shared_task(name="demo.xsum")
def xsum(numbers: list[int]) -> int:
    """Sum a list of integers (a chord callback)."""
    return sum(numbers)


@shared_task(name="demo.sleep")
def sleep(seconds: float) -> float:
    """Sleep for `seconds`, then return them."""
    time.sleep(seconds)
    return seconds


@shared_task(name="demo.echo")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it was called with."""
    return {"args": list(args), "kwargs": kwargs}


@shared_task(name="demo.fail")
def fail(message: str = "demo failure") -> None:
    """Raise RuntimeError(message)."""
    raise RuntimeError(message)


@shared_task(name="demo.noop")
def noop() -> None:
    """Do nothing (for latency measurements)."""


@shared_task(name="demo.flaky", bind=True)
def flaky(self: Any, key: str, failures: int = 1) -> str:
    """Fail the first `failures` runs for `key`, then succeed (for retry tests)."""
    client = self.app.backend.client
    attempt = int(client.incr(DEMO_FLAKY_PREFIX + key))
    client.expire(DEMO_FLAKY_PREFIX + key, 3600)
    if attempt <= failures:
        raise RuntimeError(f"flaky {key}: attempt {attempt} of {failures} failing")
    return f"ok after {attempt} attempts"
