"""One way from a URL to a bounded redis client, with one table of the schemes that mean Redis.

Celery, kombu and redis-py spell the same server in different ways (`valkey://`,
`redis+socket:///run/redis.sock?virtual_host=2`, `unix:///run/redis.sock?db=2`); every client
this project opens on a broker, backend or store comes from `redis_client`, so a URL is read the
same way everywhere and only its scheme is rewritten (a host or password that happens to contain
"valkey" stays as it is).

`sentinel://h1:26379;sentinel://h2:26379/2` is kombu's Redis transport (and Celery's Redis
backend) behind Sentinel: no plain URL, since the master is found by the app's `master_name`
transport option, so `redis_client` asks the Sentinels for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

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


SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379


def is_sentinel_url(url: str | None) -> bool:
    """True when `url` names Redis/Valkey Sentinels (kombu's `sentinel://`)."""
    return bool(url) and scheme_of(str(url)) == SENTINEL_SCHEME


def is_redis_transport(url: str | None) -> bool:
    """True when kombu reads `url` with its Redis transport (plain or behind Sentinel): its
    priority sub-queues, visibility timeout and key layout apply."""
    return is_redis_url(url) or is_sentinel_url(url)


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


def redis_client(
    url: str,
    *,
    timeout_s: float,
    decode: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """A redis client on `url` whose every call is bounded by `timeout_s` (no retry on timeout);
    `options`: the app's transport options of that URL (a sentinel:// URL's `master_name`)."""
    import redis  # here: the MCP server reads the scheme table at start, opens clients later

    bounds: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }
    if is_sentinel_url(url):
        return sentinel_master(url, options or {}, bounds, decode=decode)
    return redis.Redis.from_url(redis_py_url(url), decode_responses=decode, **bounds)


def sentinel_master(
    url: str, options: Mapping[str, Any], bounds: dict[str, Any], *, decode: bool
) -> Any:
    """A client on the master the Sentinels of `url` name for `options["master_name"]`; the
    database, user and password are the first URL's, as kombu and Celery read them."""
    from redis.sentinel import Sentinel  # here: like redis above, loaded when a client opens

    name = options.get("master_name")
    if not name:
        raise ValueError("a sentinel:// URL needs the 'master_name' transport option")
    nodes = [urlsplit(part) for part in url.split(";") if part.strip()]
    first = nodes[0]
    sentinels = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        [(n.hostname or "localhost", n.port or SENTINEL_PORT) for n in nodes],
        min_other_sentinels=int(options.get("min_other_sentinels") or 0),
        sentinel_kwargs={**(options.get("sentinel_kwargs") or {}), **bounds},
    )
    return sentinels.master_for(  # type: ignore[no-untyped-call,unused-ignore]
        name,
        db=int(first.path.strip("/") or 0),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        decode_responses=decode,
        **bounds,
    )
