"""Input caps, output capping and retry backoff (pure functions)."""

from __future__ import annotations

import pytest

from celery_mcp.errors import InvalidArgument
from celery_mcp.runtime.worker.retry import backoff_s
from celery_mcp.service.limits import cap_json, cap_text, check_payload, json_depth


def test_payload_size_cap() -> None:
    check_payload(["x" * 10], {}, max_bytes=100, max_depth=5)
    with pytest.raises(InvalidArgument, match="over the cap of 100"):
        check_payload(["x" * 200], {}, max_bytes=100, max_depth=5)


def test_payload_depth_cap() -> None:
    nested: list[object] = []
    for _ in range(10):
        nested = [nested]
    with pytest.raises(InvalidArgument, match="deeper than 5"):
        check_payload([nested], {}, max_bytes=10_000, max_depth=5)
    check_payload([[1]], {"a": {"b": 1}}, max_bytes=10_000, max_depth=5)


def test_json_depth_stops_early() -> None:
    assert json_depth(1, 10) == 1
    assert json_depth([[[]]], 10) == 3
    deep: list[object] = []
    for _ in range(10_000):
        deep = [deep]
    assert json_depth(deep, 50) == 51


def test_cap_json_keeps_small_values_and_cuts_large_ones() -> None:
    assert cap_json("result", {"a": 1}, 100) == ({"a": 1}, None)
    value, cut = cap_json("result", "y" * 1000, 100)
    assert isinstance(value, str) and len(value) == 100
    assert cut == "result: 1002 -> 100 bytes"


def test_cap_text_keeps_the_end_of_a_traceback() -> None:
    original = "head " * 100 + "RuntimeError: end"
    text, cut = cap_text("traceback", original, 20)
    assert text == original[-20:] and text.endswith("RuntimeError: end") and cut is not None


@pytest.mark.parametrize(("attempt", "expected"), [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0)])
def test_backoff_doubles_and_caps(attempt: int, expected: float) -> None:
    assert backoff_s(attempt, 1.0, 60.0) == expected
