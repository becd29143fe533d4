"""HTTP security: where the HTTP server may bind, which Host/Origin it accepts, who may call it.

Pure functions and one plain ASGI middleware, tested on their own (the task allowlist and
read-only mode are the service's policy: `service.policy`).

- Bind policy: the HTTP transport binds loopback by default and refuses any other address
  unless a bearer token is configured.
- DNS rebinding: the Host and Origin headers are checked against allow-lists built here (the
  SDK checks nothing on a non-loopback bind unless it is given them).
- Bearer token: checked on every HTTP request, in constant time, before the MCP app sees it.
  Without a configured one, a generated token is kept in the data dir (`TOKEN_FILE`, 0600,
  the way Jupyter does it): other local users can reach a loopback port, not that file.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from celery_mcp.config import Settings
from celery_mcp.errors import Forbidden
from celery_mcp.runtime.private_files import private_dir, read_private, write_private

__all__ = [
    "LOOPBACK_NAMES",
    "MIN_TOKEN_CHARS",
    "TOKEN_FILE",
    "BearerTokenMiddleware",
    "with_token",
    "allowed_hosts",
    "allowed_origins",
    "check_bind",
    "is_loopback",
]

#: Host names that always mean this machine.
LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
#: Shortest bearer token accepted when binding a non-loopback address.
MIN_TOKEN_CHARS = 16
#: The generated HTTP token's file, in the data dir.
TOKEN_FILE = "http-token"


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback IP addresses (127.0.0.0/8, ::1)."""
    bare = host.strip("[]")
    if bare.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def _host_header_name(host: str) -> str:
    """How `host` appears in a Host header (IPv6 literals in brackets)."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Raise Forbidden when the HTTP server would bind a non-loopback address unguarded."""
    if is_loopback(settings.host):
        return
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if not token:
        raise Forbidden(
            f"refusing to serve HTTP on {settings.host!r} without a bearer token: anyone who "
            "can reach it could run tasks on your cluster",
            hint="set CELERY_MCP_AUTH_TOKEN to a long random secret (clients send "
            "'Authorization: Bearer <token>'), or bind 127.0.0.1",
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise Forbidden(
            f"CELERY_MCP_AUTH_TOKEN has {len(token)} characters; a non-loopback bind needs at "
            f"least {MIN_TOKEN_CHARS}",
            hint="generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )


def allowed_hosts(settings: Settings) -> list[str]:
    """Host header values accepted: loopback names, the bind address, and configured ones.

    Each name is accepted bare and with any port (`name:*`).
    """
    names = list(LOOPBACK_NAMES)
    if not is_loopback(settings.host) and not _is_unspecified(settings.host):
        names.append(_host_header_name(settings.host))
    names += list(settings.allowed_hosts)
    hosts: list[str] = []
    for name in dict.fromkeys(names):
        hosts += [name] if name.endswith(":*") or _has_port(name) else [name, f"{name}:*"]
    return hosts


def _has_port(host: str) -> bool:
    return host.rsplit("]", 1)[-1].count(":") == 1


def allowed_origins(settings: Settings) -> list[str]:
    """Origin header values accepted: http(s) on loopback names (any port) and configured ones.

    Requests without an Origin header (non-browser clients) are accepted by the SDK.
    """
    origins = [f"{scheme}://{name}:*" for name in LOOPBACK_NAMES for scheme in ("http", "https")]
    origins += [f"{scheme}://{name}" for name in LOOPBACK_NAMES for scheme in ("http", "https")]
    return list(dict.fromkeys([*origins, *settings.allowed_origins]))


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def load_or_create_token(data_dir: Path) -> str:
    """The token in `data_dir/TOKEN_FILE`, created (0600) when missing or too short. A file
    another user owns or can read is refused: the token is only as private as that file."""
    path = private_dir(data_dir) / TOKEN_FILE
    token = (read_private(path) or "").strip()
    if len(token) < MIN_TOKEN_CHARS:
        token = secrets.token_urlsafe(32)
        write_private(path, token + "\n")
    return token


def with_token(settings: Settings) -> Settings:
    """`settings` for the HTTP transport: its AUTH_TOKEN, else the data dir's generated token
    (unless `http_auth` is off)."""
    if settings.auth_token is not None or not settings.http_auth:
        return settings
    token = SecretStr(load_or_create_token(settings.data_dir))
    return settings.model_copy(update={"auth_token": token})


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>`.

    The comparison is `hmac.compare_digest` over SHA-256 digests, so its time depends on
    neither the token's content nor its length. A missing or wrong token gets 401 with a
    `WWW-Authenticate: Bearer` challenge (RFC 6750) and never reaches the MCP app.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._digest = hashlib.sha256(token.encode()).digest()

    def authorized(self, header: bytes | None) -> bool:
        """True when `header` is `Bearer <the token>` (scheme case-insensitive)."""
        scheme, _, presented = (header or b"").partition(b" ")
        given = hashlib.sha256(presented.strip()).digest()
        return hmac.compare_digest(given, self._digest) and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # none are served; refuse before any handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan passes through
            await self.app(scope, receive, send)
            return
        header = next(
            (v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), None
        )
        if self.authorized(header):
            await self.app(scope, receive, send)
            return
        error = "invalid_token" if header else "missing_token"
        body = json.dumps(
            {"error": error, "error_description": "send 'Authorization: Bearer <token>'"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="celery-mcp", error="invalid_token"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
