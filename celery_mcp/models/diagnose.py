"""Models of `diagnose` (toolset `health`): ranked findings about what is wrong."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from celery_mcp.models.common import Json, Model

Severity = Literal["critical", "warning", "info"]


class DiagnoseInput(Model):
    """Thresholds of the checks; the defaults suit most clusters."""

    window_s: float = Field(
        3600, gt=0, le=30 * 86_400, description="Failure-rate window, seconds back from now."
    )
    stuck_after_s: float | None = Field(
        None,
        gt=0,
        description="Stuck after this long, s (default: stuck_multiple x p95 runtime, else 600).",
    )
    stuck_multiple: float = Field(5.0, ge=1, le=1000, description="Multiple of p95 runtime.")
    max_wait_s: float = Field(
        300, gt=0, description="A queued message waiting longer than this is reported."
    )


class Finding(Model):
    """One problem, its evidence, and the tool call to make next."""

    check: str = Field(description="Which check found it, e.g. queue_without_consumer.")
    severity: Severity
    summary: str = Field(description="What is wrong, in one sentence.")
    evidence: dict[str, Json] = Field(default_factory=dict, description="What was observed.")
    next_tool: str | None = Field(None, description="Tool to call next (None: act outside).")
    next_arguments: dict[str, Json] = Field(
        default_factory=dict, description="Arguments for next_tool."
    )


class DiagnoseResult(Model):
    """Findings, most severe first, and which checks ran."""

    ok: bool = Field(description="True when nothing critical or warning was found.")
    findings: list[Finding]
    checks: dict[str, str] = Field(
        description="Each check and its outcome: ok, found N, or skipped and why."
    )
    elapsed_ms: float
