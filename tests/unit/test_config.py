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
