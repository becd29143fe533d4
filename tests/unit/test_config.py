"""Settings parsing and credential redaction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from celery_mcp.config import TOOLSETS, Settings, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("amqp://user:pw@rabbit//", "amqp://user:***@rabbit//"),
        ("rediss://token@host", "rediss://***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("a redis://u:p@h/0 and amqp://x:y@z//", "a redis://u:***@h/0 and amqp://x:***@z//"),
        ("redis://:p@ss@w0rd@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://h/0?password=s3cret", "redis://h/0?password=***"),
        ("redis://h/0?db=1&password=s3cret&x=1", "redis://h/0?db=1&password=***&x=1"),
        ("sentinel://h:26379?sentinel_password=s3", "sentinel://h:26379?sentinel_password=***"),
        (
            "{'master_name': 'm', 'sentinel_kwargs': {'password': 's3cret'}}",
            "{'master_name': 'm', 'sentinel_kwargs': {'password': '***'}}",
        ),
        ('{"password": "s3cret", "db": 0}', '{"password": "***", "db": 0}'),
        (
            "rediss://h:6380/0?ssl_certfile=/etc/c.pem&ssl_cert_reqs=required",
            "rediss://h:6380/0?ssl_certfile=/etc/c.pem&ssl_cert_reqs=required",
        ),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_toolsets_from_env_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_MCP_TOOLSETS", "tasks, workflows")
    assert Settings().toolsets == ("tasks", "workflows", "health")


def test_toolsets_all() -> None:
    assert Settings(toolsets="all").toolsets == TOOLSETS


def test_unknown_toolset_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="unknown toolset.*nope.*choose from"):
        Settings(toolsets="tasks,nope")


def test_redacted_settings_hide_credentials() -> None:
    s = Settings(broker_url="redis://:pw@h/0", auth_token="tok")
    data = s.redacted()
    assert "pw" not in str(data["broker_url"]) and data["auth_token"] == "***"
