"""One way from a URL to a bounded redis client, with one table of the schemes that mean Redis.

Celery, kombu and redis-py spell the same server in different ways (`valkey://`,
`redis+socket:///run/redis.sock?virtual_host=2`, `unix:///run/redis.sock?db=2`); every client
this project opens on a broker, backend or store comes from `redis_client`, so a URL is read the
same way everywhere and only its scheme is rewritten (a host or password that happens to contain
"valkey" stays as it is).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

#: URL scheme -> the scheme redis-py reads; a scheme not listed is not a plain Redis/Valkey URL
#: (amqp://, rpc://, sentinel:// ...).
REDIS_SCHEMES: dict[str, str] = {
    "redis": "redis",
    "rediss": "rediss",
    "valkey": "redis",
    "valkeys": "rediss",
    "unix": "unix",
    "redis+socket": "unix",
    "socket": "unix",
}


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased ('' when there is none)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def is_redis_url(url: str | None) -> bool:
    """True when `url` names a plain Redis/Valkey server (any spelling in REDIS_SCHEMES)."""
    return bool(url) and scheme_of(str(url)) in REDIS_SCHEMES


AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


def is_amqp_url(url: str | None) -> bool:
    """True when `url` names an AMQP broker (RabbitMQ) through py-amqp."""
    return bool(url) and scheme_of(str(url)) in AMQP_SCHEMES


def redis_py_url(url: str) -> str:
    """`url` as redis-py reads it: the scheme mapped, a unix socket's `virtual_host` as `db`."""
    target = REDIS_SCHEMES.get(scheme_of(url))
    if target is None:
        raise ValueError(f"not a Redis/Valkey URL scheme: {scheme_of(url)!r}")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if target == "unix":
        query = [("db", v) if k == "virtual_host" else (k, v) for k, v in query]
    tail = f"?{urlencode(query)}" if query else ""
    return f"{target}://{parts.netloc}{parts.path}{tail}"  # urlunsplit drops "//" of unix:///


def redis_client(url: str, *, timeout_s: float, decode: bool = False) -> Any:
    """A redis client on `url` whose every call is bounded by `timeout_s` (no retry on timeout)."""
    import redis  # here: the MCP server reads the scheme table at start, opens clients later

    return redis.Redis.from_url(
        redis_py_url(url),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry_on_timeout=False,
        health_check_interval=0,
        decode_responses=decode,
    )
