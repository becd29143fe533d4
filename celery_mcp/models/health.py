"""Models of the `health` toolset."""

from __future__ import annotations

from pydantic import Field

from celery_mcp.models.common import Model


class HealthInput(Model):
    """Check broker, result backend, workers, beat and schedule store."""

    include_workers: bool = Field(True, description="Ping workers (bounded by inspect timeout).")


class ComponentHealth(Model):
    """One component's state."""

    ok: bool | None = Field(description="True healthy, False failing, None not checked/unknown.")
    latency_ms: float | None = Field(None, description="Round trip of the check.")
    detail: str = Field("", description="What was checked and what was found.")


class HealthResult(Model):
    """Overall and per-component health."""

    ok: bool = Field(description="True when broker, backend, state store and a worker are up.")
    broker_url: str = Field(description="Broker URL, credentials redacted.")
    backend_url: str = Field(description="Result backend URL, credentials redacted.")
    embedded: bool = Field(description="True when running on the embedded Valkey server.")
    broker: ComponentHealth
    backend: ComponentHealth
    workers: ComponentHealth
    worker_names: list[str] = Field(default_factory=list, description="Workers that answered.")
    beat: ComponentHealth
    schedule_store: ComponentHealth
    state_store: ComponentHealth = Field(
        description="Where this project keeps history, schedules and (rpc://) results."
    )
