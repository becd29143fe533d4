"""Streamable HTTP transport over real `celery-mcp serve --transport http` processes.

The official MCP client (`streamable_http_client` + `ClientSession`) talks to the server; the
checks are the ones an attacker would try: no token, a wrong token, a foreign Origin (a web
page), a foreign Host (DNS rebinding), and a server exposed beyond loopback without a token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from celery_mcp.runtime.embedded import EmbeddedServer
from tests.support import HttpServer, call, free_port, http_server, http_session, wait_until

pytestmark = pytest.mark.anyio

TOKEN = "test-token-" + "7f3a9c2e5b1d4f60"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(env: dict[str, str], embedded: EmbeddedServer, data_dir: Path) -> Iterator[HttpServer]:
    """`serve --transport http --with-worker` on loopback with a bearer token."""
    with http_server(env | {"CELERY_MCP_AUTH_TOKEN": TOKEN}, data_dir, "--with-worker") as srv:
        yield srv


async def refused(url: str, headers: dict[str, str]) -> list[Any]:
    """Open a session with `headers`, expect the client to fail; return the HTTP responses."""
    responses: list[Any] = []
    with pytest.raises(Exception):  # noqa: B017 (the client raises an ExceptionGroup of MCPError)
        with anyio.fail_after(30):
            async with http_session(url, headers, responses):
                pass
    return responses


async def test_right_token_is_accepted_and_tools_work(served: HttpServer) -> None:
    async with http_session(served.url, AUTH) as session:
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"send_task", "get_result", "health"} <= names
        sent = await call(session, "send_task", task_name="demo.add", args=[20, 22])
        result = await call(session, "get_result", task_id=sent["task_id"], timeout_s=30)
    assert result["success"] and result["result"] == 42


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_missing_or_wrong_token_is_refused_with_401(
    served: HttpServer, headers: dict[str, str]
) -> None:
    responses = await refused(served.url, headers)
    assert [r.status_code for r in responses] == [401]
    assert responses[0].headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in responses[0].text


async def test_foreign_origin_is_refused_with_403(served: HttpServer) -> None:
    responses = await refused(served.url, AUTH | {"Origin": "http://evil.example"})
    assert [r.status_code for r in responses] == [403]


async def test_loopback_origin_is_accepted(served: HttpServer) -> None:
    origin = {"Origin": f"http://localhost:{served.port}"}
    async with http_session(served.url, AUTH | origin) as session:
        assert (await session.send_ping()) is not None


async def test_foreign_host_is_refused_with_421(served: HttpServer) -> None:
    responses = await refused(served.url, AUTH | {"Host": f"rebind.evil.example:{served.port}"})
    assert [r.status_code for r in responses] == [421]


@pytest.mark.parametrize(
    ("host", "token", "expected"),
    [
        ("0.0.0.0", None, "without a bearer token"),
        ("0.0.0.0", "short", "at least 16"),
        ("::", None, "without a bearer token"),
    ],
)
def test_non_loopback_bind_without_a_good_token_is_refused_at_start(
    env: dict[str, str], host: str, token: str | None, expected: str
) -> None:
    port = free_port()
    child_env = env | ({"CELERY_MCP_AUTH_TOKEN": token} if token else {})
    cmd = [sys.executable, "-m", "celery_mcp", "serve", "--transport", "http"]
    proc = subprocess.run(
        [*cmd, "--host", host, "--port", str(port)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert expected in proc.stderr and "CELERY_MCP_AUTH_TOKEN" in proc.stderr
    if token:
        assert token not in proc.stderr + proc.stdout


async def test_wildcard_bind_with_token_still_checks_host_and_origin(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path
) -> None:
    child_env = env | {"CELERY_MCP_AUTH_TOKEN": TOKEN, "CELERY_MCP_ALLOWED_HOSTS": "mcp.internal"}
    with http_server(child_env, data_dir, "--host", "0.0.0.0") as srv:
        async with http_session(srv.url, AUTH) as session:  # Host 127.0.0.1:port
            assert (await session.send_ping()) is not None
        async with http_session(srv.url, AUTH | {"Host": f"mcp.internal:{srv.port}"}) as session:
            assert (await session.send_ping()) is not None
        assert [r.status_code for r in await refused(srv.url, {"Host": "mcp.internal"})] == [401]
        responses = await refused(srv.url, AUTH | {"Host": f"evil.example:{srv.port}"})
        assert [r.status_code for r in responses] == [421]
        responses = await refused(srv.url, AUTH | {"Origin": "https://evil.example"})
        assert [r.status_code for r in responses] == [403]


def _broker_dump(embedded: EmbeddedServer) -> bytes:
    """Every key and value of the broker and backend databases, as one blob."""
    import redis

    blob = b""
    for db in (0, 1):
        client = redis.Redis.from_url(embedded.url_for_db(db), socket_timeout=5)
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                value = client.get(key) or b""
            elif kind == b"list":
                value = b"".join(client.lrange(key, 0, -1))
            elif kind == b"set":
                value = b"".join(client.smembers(key))
            elif kind == b"zset":
                value = b"".join(client.zrange(key, 0, -1))
            elif kind == b"hash":
                value = b"".join(k + v for k, v in client.hgetall(key).items())
            else:
                value = b""
            blob += key + value
        client.close()
    return blob


async def test_token_reaches_neither_the_worker_nor_the_broker(
    served: HttpServer, embedded: EmbeddedServer
) -> None:
    async with http_session(served.url, AUTH) as session:
        sent = await call(session, "send_task", task_name="demo.echo", args=["x"], countdown=60)
        await call(session, "get_status", task_id=sent["task_id"])
    match = wait_until(
        lambda: re.search(r"\(pid (\d+)\) starting", served.output()), 10, what="worker pid line"
    )
    environ = Path(f"/proc/{match.group(1)}/environ").read_bytes()
    assert b"CELERY_MCP_BROKER_URL" in environ or b"CELERY_MCP_DATA_DIR" in environ
    assert TOKEN.encode() not in environ and b"CELERY_MCP_AUTH_TOKEN" not in environ
    assert TOKEN.encode() not in _broker_dump(embedded)
    assert TOKEN not in served.output()
    assert os.environ.get("CELERY_MCP_AUTH_TOKEN") != TOKEN


async def test_loopback_http_needs_the_generated_token_by_default(
    env: dict[str, str], embedded: EmbeddedServer, data_dir: Path, tmp_path: Path
) -> None:
    """Another local user can reach 127.0.0.1, not the 0600 token file: without the token the
    server answers 401; the start-up line's header and `celery-mcp http-token` both work."""
    own = env | {"CELERY_MCP_DATA_DIR": str(tmp_path / "d")}
    own |= {"CELERY_MCP_BROKER_URL": embedded.url_for_db(0)}  # broker outside that data dir
    with http_server(own, tmp_path) as srv:
        token_file = tmp_path / "d" / "http-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        first = srv.headers
        assert first == {"Authorization": f"Bearer {token}"}
        assert [r.status_code for r in await refused(srv.url, {})] == [401]
        async with http_session(srv.url, srv.headers) as session:
            assert (await session.send_ping()) is not None
        printed = subprocess.run(
            [sys.executable, "-m", "celery_mcp", "http-token"],
            env=own,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert printed.stdout.strip() == token
    with http_server(own, tmp_path) as again:  # the same token on the next start
        assert again.headers == first
    token_file.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "celery_mcp", "serve", "--transport", "http"],
        env=own,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0 and "not private to this user" in proc.stderr
