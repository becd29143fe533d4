"""The demo app for `celery -A bench.flower_app:app flower`: the bench's broker, from the env."""

from __future__ import annotations

from celery_mcp.app import make_app
from celery_mcp.config import Settings
from celery_mcp.runtime.embedded import resolve

app = make_app(resolve(Settings()))
