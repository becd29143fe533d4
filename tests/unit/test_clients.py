"""One reading of every Redis URL spelling: only the scheme is ever rewritten."""

from __future__ import annotations

import pytest

from celery_mcp.stores.clients import is_redis_transport, is_redis_url, redis_client, redis_py_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://valkey:6379/0", "redis://valkey:6379/0"),  # a docker-compose host name
        ("valkey://valkey:6379/2", "redis://valkey:6379/2"),
        ("valkeys://:pw-valkey@valkey:6380/0", "rediss://:pw-valkey@valkey:6380/0"),
        ("redis://:valkey@host/0?password=valkey", "redis://:valkey@host/0?password=valkey"),
        ("redis+socket:///run/valkey/valkey.sock", "unix:///run/valkey/valkey.sock"),
        ("redis+socket:///run/r.sock?virtual_host=3", "unix:///run/r.sock?db=3"),
        ("socket:///run/r.sock", "unix:///run/r.sock"),
        ("unix:///run/r.sock?db=1", "unix:///run/r.sock?db=1"),
    ],
)
def test_only_the_scheme_is_rewritten(url: str, expected: str) -> None:
    assert is_redis_url(url) and redis_py_url(url) == expected


@pytest.mark.parametrize("url", ["amqp://guest@localhost//", "rpc://", "sentinel://h:26379", ""])
def test_other_schemes_are_not_redis(url: str) -> None:
    assert not is_redis_url(url)


def test_sentinel_is_kombus_redis_transport_and_its_master_is_named_by_the_app() -> None:
    url = "sentinel://:s%40cret@h1:26380/2;sentinel://h2/2"  # db, password: the first's
    assert is_redis_transport(url) and not is_redis_url(url)
    with pytest.raises(ValueError, match="master_name"):
        redis_client(url, timeout_s=1)
    client = redis_client(url, timeout_s=1, options={"master_name": "main"})  # connects lazily
    pool = client.connection_pool
    assert pool.service_name == "main" and pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "s@cret"
    sentinels = pool.sentinel_manager.sentinels
    assert [c.connection_pool.connection_kwargs["port"] for c in sentinels] == [26380, 26379]
