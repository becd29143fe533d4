"""manifests/: the MCP registry entry and the client configs parse and match the settings."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import celery_mcp
from celery_mcp.config import DEFAULT_TOOLSETS, TOOLSETS, Settings
from celery_mcp.interfaces.cli import build_parser
from celery_mcp.service.policy import enabled_toolsets
from celery_mcp.service.registry import OPERATIONS
from tests.support import ROOT

MANIFESTS = ROOT / "manifests"
#: client config file -> the key holding its servers
CLIENT_CONFIGS = {
    "claude_desktop_config.json": "mcpServers",
    ".mcp.json": "mcpServers",
    "vscode.mcp.json": "servers",
    "cursor.mcp.json": "mcpServers",
}
ENV_NAMES = {f"CELERY_MCP_{name.upper()}" for name in Settings.model_fields}
SECRETS = {"CELERY_MCP_BROKER_URL", "CELERY_MCP_RESULT_BACKEND", "CELERY_MCP_AUTH_TOKEN"}
CURSOR_TOOL_CAP = 40


def _load(name: str) -> Any:
    return json.loads((MANIFESTS / name).read_text(encoding="utf-8"))


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _servers(name: str) -> dict[str, dict[str, Any]]:
    servers: dict[str, dict[str, Any]] = _load(name)[CLIENT_CONFIGS[name]]
    return servers


def _settings_from_env(env: dict[str, str]) -> Settings:
    """Settings as the server would read them from `env` (inputs/placeholders filled in)."""
    values = {
        key.removeprefix("CELERY_MCP_").lower(): (
            "redis://example.invalid:6379/0" if "${" in value else value
        )
        for key, value in env.items()
    }
    return Settings(**values)


def _tool_count(settings: Settings) -> int:
    return sum(
        1
        for op in OPERATIONS.values()
        if op.toolset in settings.toolsets and (op.read_only or not settings.read_only)
    )


def test_every_manifest_is_json() -> None:
    names = {p.name for p in MANIFESTS.iterdir()}
    assert names == {"server.json", *CLIENT_CONFIGS}
    for name in names:
        assert isinstance(_load(name), dict), name


def test_server_json_matches_the_package() -> None:
    server = _load("server.json")
    project = _pyproject()
    assert server["$schema"].startswith("https://static.modelcontextprotocol.io/schemas/")
    assert re.fullmatch(r"io\.github\.[A-Za-z0-9-]+/[A-Za-z0-9._-]+", server["name"])
    assert 0 < len(server["description"]) <= 100  # the registry's limit
    assert server["version"] == project["version"] == celery_mcp.__version__
    (package,) = server["packages"]
    assert package["registryType"] == "pypi" and package["registryBaseUrl"] == "https://pypi.org"
    assert package["identifier"] == project["name"] == "celery-mcp"
    assert package["version"] == project["version"]
    assert package["transport"] == {"type": "stdio"}
    assert package["runtimeHint"] == "uvx" and "celery-mcp" in project["scripts"]
    args = [a["value"] for a in package["packageArguments"] if a["type"] == "positional"]
    build_parser().parse_args(args)  # `celery-mcp serve` is a valid command line
    assert args == ["serve"]


def test_server_json_env_vars_are_settings() -> None:
    (package,) = _load("server.json")["packages"]
    env = package["environmentVariables"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert set(names) <= ENV_NAMES, set(names) - ENV_NAMES
    assert {"CELERY_MCP_BROKER_URL", "CELERY_MCP_TOOLSETS", "CELERY_MCP_READ_ONLY"} <= set(names)
    for var in env:
        assert var["description"] and var["isRequired"] is False, var
        assert var.get("isSecret", False) == (var["name"] in SECRETS), var
        if "default" in var:  # the default it documents is the real one
            field = var["name"].removeprefix("CELERY_MCP_").lower()
            given = _settings_from_env({var["name"]: var["default"]})
            if field == "toolsets":  # unset: the MCP server's default toolsets
                assert enabled_toolsets(given, "mcp") == enabled_toolsets(Settings(), "mcp")
                real = DEFAULT_TOOLSETS
            else:
                assert given == Settings(), field
                real = Settings.model_fields[field].default
            shown = var["default"]
            if isinstance(real, tuple):
                assert tuple(shown.split(",")) == tuple(t for t in real if t != "health")
            else:
                assert str(real).lower() == shown.lower() or float(real) == float(shown)


def test_readme_carries_the_registry_name() -> None:
    # PyPI ownership check of the MCP registry: `mcp-name: <name>` in the package README
    name = _load("server.json")["name"]
    assert f"mcp-name: {name}" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("config", sorted(CLIENT_CONFIGS))
def test_client_config_runs_celery_mcp_serve(config: str) -> None:
    servers = _servers(config)
    assert "celery" in servers
    for name, server in servers.items():
        assert re.fullmatch(r"celery[a-z-]*", name), name
        command, args = server["command"], server["args"]
        assert command in ("uvx", "celery-mcp"), server
        cli_args = args[1:] if command == "uvx" else args
        if command == "uvx":
            assert args[0] == "celery-mcp"
        assert cli_args[0] == "serve"
        build_parser().parse_args(cli_args)  # every flag exists
        if "type" in server:
            assert server["type"] == "stdio"


@pytest.mark.parametrize("config", sorted(CLIENT_CONFIGS))
def test_client_config_env_is_valid_settings(config: str) -> None:
    for server in _servers(config).values():
        env = server.get("env", {})
        assert set(env) <= ENV_NAMES, set(env) - ENV_NAMES
        toolsets = env.get("CELERY_MCP_TOOLSETS", "")
        assert {t for t in toolsets.split(",") if t} <= {*TOOLSETS, "all"}, toolsets
        for key in set(env) & SECRETS:  # never a literal credential in a config file
            assert env[key].startswith("${"), (config, key)
        _settings_from_env(env)  # raises on a bad value


def test_vscode_inputs_are_declared() -> None:
    config = _load("vscode.mcp.json")
    declared = {i["id"] for i in config["inputs"]}
    used = set(re.findall(r"\$\{input:([^}]+)\}", json.dumps(config["servers"])))
    assert used <= declared and used
    assert all(i.get("password") for i in config["inputs"] if "url" in i["id"])


def test_cursor_stays_well_under_its_tool_cap() -> None:
    (server,) = _servers("cursor.mcp.json").values()
    count = _tool_count(_settings_from_env(server["env"]))
    assert count <= CURSOR_TOOL_CAP // 2, count  # leave room for the user's other servers


def test_toolset_choices_differ_per_client() -> None:
    counts = {
        config: _tool_count(_settings_from_env(_servers(config)["celery"].get("env", {})))
        for config in CLIENT_CONFIGS
    }
    assert counts["cursor.mcp.json"] < counts[".mcp.json"] <= counts["claude_desktop_config.json"]


def test_manifests_dir_has_no_stray_files() -> None:
    assert all(p.is_file() for p in Path(MANIFESTS).iterdir())
