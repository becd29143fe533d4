"""Logging to stderr with credentials redacted from every line."""

from __future__ import annotations

import logging

from celery_mcp.config import redact_url


class RedactingFormatter(logging.Formatter):
    """A formatter whose output never contains a URL password."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_url(super().format(record))


def setup_logging(level: str) -> None:
    """Send every log line to stderr (stdout carries MCP stdio), credentials redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
