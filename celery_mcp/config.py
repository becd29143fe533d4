"""Settings: one typed object from `CELERY_MCP_*` env vars and CLI flags, plus URL redaction.

Every timeout here is a bound: no call the server makes on a broker, backend or worker waits
longer than the setting that governs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Every toolset a server can expose; `health` is always on.
TOOLSETS: tuple[str, ...] = (
    "tasks",
    "workers",
    "workflows",
    "schedules",
    "catalog",
    "history",
    "health",
)
#: The MCP server's default: what an operator needs first (send and read tasks, see and steer
#: workers, know how to call a task, what happened and what is wrong): 20 tools, about 22 KB of
#: tools/list. `workflows` (5 tools, about 10 KB of nested step schemas) and `schedules` are
#: opt-in. The Python API and the CLI offer every toolset unless toolsets are set.
DEFAULT_TOOLSETS: tuple[str, ...] = ("tasks", "workers", "catalog", "history", "health")

# userinfo runs to the last "@" of the authority (as urllib and redis-py split it): a password
# may itself contain "@"
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s]*)@")
_SECRET_NAMES = r"(?:sentinel_)?password|passwd|pass|token|secret"
_QUERY_SECRET = re.compile(rf"(?P<key>[?&;](?:{_SECRET_NAMES})=)[^&;#\s]*", re.IGNORECASE)
# a mapping's repr or JSON, e.g. transport options' sentinel_kwargs={'password': ...}
_MAPPING_SECRET = re.compile(
    rf"(?P<key>(?P<q>['\"])(?:{_SECRET_NAMES})(?P=q)\s*:\s*)(?P<v>['\"]).*?(?P=v)", re.IGNORECASE
)


def redact_url(text: str) -> str:
    """Replace every credential in `text` with `***`: a URL's password (or whole userinfo), a
    `password=` query parameter, and a `'password': ...` item of a mapping's repr or JSON."""

    def _sub(match: re.Match[str]) -> str:
        user, sep, _password = match.group("userinfo").partition(":")
        kept = f"{user}:***" if sep else "***"
        return f"{match.group('scheme')}{kept}@"

    text = _CREDENTIALS.sub(_sub, text)
    text = _QUERY_SECRET.sub(r"\g<key>***", text)
    return _MAPPING_SECRET.sub(r"\g<key>\g<v>***\g<v>", text)


def default_data_dir() -> Path:
    """Per-user data dir: `$XDG_DATA_HOME/celery-mcp` or `~/.local/share/celery-mcp`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "celery-mcp"


class Settings(BaseSettings):
    """All settings of celery_mcp; env vars are `CELERY_MCP_<FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="CELERY_MCP_", extra="ignore")

    broker_url: str | None = Field(
        None, description="Broker URL (redis://, rediss://, amqp://). Unset: embedded Valkey."
    )
    result_backend: str | None = Field(
        None, description="Result backend URL. Unset: the broker URL when it is Redis/Valkey."
    )
    app: str | None = Field(
        None, description="Import path of your Celery app, e.g. 'proj.celery:app'."
    )
    state_url: str | None = Field(
        None,
        description="Redis/Valkey for this project's own state (task history, schedules, "
        "workflow records, rpc:// results). Unset: the broker's Redis, else the result "
        "backend's, else the embedded Valkey.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Embedded server data, lock and logs."
    )
    toolsets: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None,
        description="Toolsets to offer (comma-separated), or 'all'. Unset: the MCP server offers "
        "the default toolsets, the Python API and the CLI all of them.",
    )
    read_only: bool = Field(False, description="Hide every tool that changes state.")

    # Bounds, in seconds.
    call_timeout_s: float = Field(10.0, gt=0, description="Bound on one tool call.")
    broker_timeout_s: float = Field(1.0, gt=0, description="Connect/socket timeout to broker.")
    inspect_timeout_s: float = Field(1.0, gt=0, description="Wait for worker replies.")
    result_wait_max_s: float = Field(300.0, gt=0, description="Largest get_result wait allowed.")
    result_expires_s: int = Field(86_400, gt=0, description="How long results are kept.")
    visibility_timeout_s: float | None = Field(
        None, gt=0, description="Redis broker: redeliver unacked tasks after this (Celery: 1 h)."
    )

    # Caps on what an agent may send or receive.
    max_payload_bytes: int = Field(256_000, gt=0, description="Serialized args+kwargs cap.")
    max_depth: int = Field(32, gt=0, description="Nesting depth cap of args/kwargs.")
    max_output_bytes: int = Field(64_000, gt=0, description="Result/traceback size cap.")
    max_workflow_size: int = Field(10_000, gt=0, description="Most tasks in one workflow.")

    # Streamable HTTP transport.
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    auth_token: SecretStr | None = Field(
        None, description="Bearer token every HTTP request must carry; needed off loopback."
    )
    http_auth: bool = Field(
        True,
        description="Unset AUTH_TOKEN on HTTP: generate one (kept in the data dir). False: "
        "loopback HTTP without a token (single-user machines only).",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Extra Host header values accepted on HTTP (loopback always is)."
    )
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Extra Origin header values accepted on HTTP (loopback always is)."
    )

    # Task allowlist: glob patterns; empty = any task the app or a live worker registers.
    task_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Glob patterns of task names that may be sent or scheduled."
    )

    # Task history (recorded by `celery-mcp monitor`), bounded by count and age.
    history_max_tasks: int = Field(50_000, gt=0, description="Most tasks kept in the history.")
    history_max_age_s: int = Field(7 * 86_400, gt=0, description="Oldest task kept, seconds.")
    history_field_bytes: int = Field(
        4_096, gt=0, description="Cap on each stored args/kwargs/result/traceback."
    )

    # Set by `celery-mcp serve --with-worker` on its own settings, not by users.
    own_worker: str | None = Field(
        None, description="Hostname of the worker `serve --with-worker` started."
    )
    own_worker_since: float | None = Field(None, description="When it was started (unix s).")

    timezone: str = Field("UTC", description="Timezone for schedules and ETAs.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @field_validator("allowed_hosts", "allowed_origins", "task_allow", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("toolsets", mode="before")
    @classmethod
    def _parse_toolsets(cls, value: object) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        names = tuple(str(v) for v in value)  # type: ignore[attr-defined]
        if "all" in names:
            return TOOLSETS
        unknown = sorted(set(names) - set(TOOLSETS))
        if unknown:
            raise ValueError(
                f"unknown toolset(s) {', '.join(unknown)}; "
                f"choose from {', '.join(TOOLSETS)} or 'all'"
            )
        return tuple(dict.fromkeys((*names, "health")))

    _embedded: bool = PrivateAttr(False)

    @property
    def embedded(self) -> bool:
        """True when the broker is the embedded Valkey (none configured, or filled in)."""
        return self.broker_url is None or self._embedded

    def with_embedded(self, broker_url: str, result_backend: str) -> Settings:
        """These settings on the embedded server's URLs (`runtime.embedded.resolve`)."""
        resolved = self.model_copy(
            update={"broker_url": broker_url, "result_backend": result_backend}
        )
        resolved._embedded = True
        return resolved

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """repr() (and so tracebacks and log lines) with URL passwords redacted."""
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) else value

    def redacted(self) -> dict[str, object]:
        """Settings as a dict with credentials removed, safe for output and logs."""
        data = self.model_dump(mode="json")
        for key in ("broker_url", "result_backend", "state_url"):
            if data.get(key):
                data[key] = redact_url(str(data[key]))
        if data.get("auth_token"):
            data["auth_token"] = "***"
        return data
