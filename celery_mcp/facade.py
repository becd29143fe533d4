"""CelerySkill: the Python API over the same service operations (filled in by issue 6)."""

from __future__ import annotations


class CelerySkill:
    """Placeholder until the facade lands."""
