"""celery_mcp: operate a Celery cluster from AI agents (MCP), Python (`CelerySkill`) or a CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CelerySkill", "Settings", "__version__"]

if TYPE_CHECKING:
    from celery_mcp.config import Settings
    from celery_mcp.interfaces.facade import CelerySkill


def __getattr__(name: str) -> Any:
    # Lazy: `celery-mcp serve` must not pay for importing the facade (or Celery) up front.
    if name == "CelerySkill":
        from celery_mcp.interfaces.facade import CelerySkill

        return CelerySkill
    if name == "Settings":
        from celery_mcp.config import Settings

        return Settings
    raise AttributeError(name)
