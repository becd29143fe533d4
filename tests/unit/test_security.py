"""Security policy as pure logic: task allowlist, bind policy, Host/Origin lists, bearer check."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from celery_mcp.config import Settings
from celery_mcp.errors import Forbidden
from celery_mcp.interfaces.mcp.http_security import (
    BearerTokenMiddleware,
    allowed_hosts,
    allowed_origins,
    check_bind,
    is_loopback,
)
from celery_mcp.service.policy import check_task_allowed, task_allowed

TOKEN = "s3cret-token-0123456789"


def test_empty_task_allowlist_allows_every_name() -> None:
    assert task_allowed(Settings(), "anything.at.all")


def test_task_allowlist_matches_glob_patterns_only() -> None:
    s = Settings(task_allow="demo.add, reports.*")
    assert s.task_allow == ("demo.add", "reports.*")
    assert task_allowed(s, "demo.add") and task_allowed(s, "reports.daily")
    assert not task_allowed(s, "demo.addx") and not task_allowed(s, "Reports.daily")
    with pytest.raises(Forbidden, match=r"'demo.sleep' is not in the task allowlist"):
        check_task_allowed(s, "demo.sleep")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)
    check_bind(Settings(host=host))  # no token needed


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com"])
def test_non_loopback_bind_needs_a_long_token(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(Forbidden, match="without a bearer token"):
        check_bind(Settings(host=host))
    with pytest.raises(Forbidden, match="at least 16"):
        check_bind(Settings(host=host, auth_token="short"))
    check_bind(Settings(host=host, auth_token=TOKEN))


def test_token_never_shows_in_settings_repr_or_dump() -> None:
    s = Settings(auth_token=TOKEN)
    assert TOKEN not in repr(s) and TOKEN not in str(s.redacted())
    assert TOKEN not in s.model_dump_json()


def test_settings_repr_never_shows_a_url_password() -> None:
    s = Settings(broker_url="redis://:hunter2@h:6379/0", result_backend="redis://u:hunter2@h/1")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert "redis://:***@h:6379/0" in repr(s) and "redis://u:***@h/1" in repr(s)


def test_allowed_hosts_cover_loopback_and_the_bind_address() -> None:
    assert {"127.0.0.1:*", "localhost:*", "[::1]:*", "localhost"} <= set(allowed_hosts(Settings()))
    lan = allowed_hosts(Settings(host="10.1.2.3", allowed_hosts="mcp.internal,gw:8443"))
    assert {"10.1.2.3", "10.1.2.3:*", "mcp.internal:*", "gw:8443"} <= set(lan)
    assert "gw:8443:*" not in lan
    assert not any(h.startswith("0.0.0.0") for h in allowed_hosts(Settings(host="0.0.0.0")))
    assert "[fe80::1]:*" in allowed_hosts(Settings(host="fe80::1"))


def test_allowed_origins_are_loopback_and_configured() -> None:
    origins = allowed_origins(Settings(allowed_origins="https://console.example"))
    assert "http://localhost:*" in origins and "https://console.example" in origins
    assert not any("evil" in o for o in origins)


async def _call(mw: BearerTokenMiddleware, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    mw.app = app
    await mw({"type": "http", "headers": headers}, receive, send)
    status = sent[0]["status"] if sent else 200
    return {
        "reached": bool(reached),
        "status": status,
        "headers": dict(sent[0]["headers"]) if sent else {},
    }


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, False),
        (b"Bearer " + TOKEN.encode(), True),
        (b"bearer " + TOKEN.encode(), True),
        (b"Bearer " + TOKEN.encode()[:-1], False),
        (b"Bearer " + TOKEN.encode() + b"x", False),
        (b"Basic " + TOKEN.encode(), False),
        (TOKEN.encode(), False),
        (b"Bearer ", False),
        (b"Bearer \xff\xfe", False),
    ],
)
def test_bearer_middleware_admits_only_the_exact_token(header: bytes | None, ok: bool) -> None:
    mw = BearerTokenMiddleware(lambda *a: None, TOKEN)  # type: ignore[arg-type,return-value]
    headers = [(b"authorization", header)] if header is not None else []
    out = anyio.run(_call, mw, headers)
    assert out["reached"] is ok
    if not ok:
        assert out["status"] == 401 and out["headers"][b"www-authenticate"].startswith(b"Bearer")


def test_bearer_middleware_lets_lifespan_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def nothing(*_: Any) -> Any:
        return {}

    anyio.run(BearerTokenMiddleware(app, TOKEN), {"type": "lifespan"}, nothing, nothing)
    assert seen == ["lifespan"]
