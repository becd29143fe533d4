"""Command line: `celery-mcp serve | worker | beat | broker ...` and `--action NAME [--field V]`.

`--action` runs one service operation (the same ones the MCP tools call) and prints its output
model as JSON; on failure it prints `{"error": {"code", "message", "hint"}}` and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

#: `--action` names that are not operation names (the seed's spelling).
ACTION_ALIASES = {"ping": "ping_workers"}

SETTING_FLAGS = {
    "--broker-url": "broker_url",
    "--result-backend": "result_backend",
    "--app": "app",
    "--data-dir": "data_dir",
    "--toolsets": "toolsets",
}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (also CELERY_MCP_* env vars)")
    for flag, dest in SETTING_FLAGS.items():
        group.add_argument(
            flag, dest=dest, default=argparse.SUPPRESS, help=f"env CELERY_MCP_{dest.upper()}"
        )
    group.add_argument(
        "--read-only", dest="read_only", action="store_true", default=argparse.SUPPRESS
    )
    group.add_argument("--log-level", dest="log_level", default=argparse.SUPPRESS)


def _settings(ns: argparse.Namespace, **extra: Any) -> Any:
    from pydantic import ValidationError

    from celery_mcp.config import Settings

    keys = [*SETTING_FLAGS.values(), "read_only", "log_level"]
    overrides = {k: getattr(ns, k) for k in keys if getattr(ns, k, None) is not None}
    overrides.update({k: v for k, v in extra.items() if v is not None})
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise SystemExit(f"celery-mcp: invalid setting {first['loc'][0]}: {first['msg']}") from None


def _env_for_children(settings: Any) -> dict[str, str]:
    """Environment that makes a child `celery-mcp` use the same settings."""
    env = {k: v for k, v in os.environ.items() if k != "CELERY_MCP_AUTH_TOKEN"}  # HTTP only
    for key in ("broker_url", "result_backend", "app", "data_dir"):
        value = getattr(settings, key)
        if value is not None:
            env[f"CELERY_MCP_{key.upper()}"] = str(value)
    return env


def cmd_serve(ns: argparse.Namespace) -> int:
    from celery_mcp.logs import setup_logging

    settings = _settings(ns, host=ns.host, port=ns.port)
    setup_logging(settings.log_level)
    if ns.transport == "http":
        from celery_mcp.errors import Forbidden
        from celery_mcp.security import check_bind

        try:
            check_bind(settings)
        except Forbidden as exc:
            raise SystemExit(f"celery-mcp: {exc}") from None
    worker = None
    if ns.with_worker:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(settings.data_dir / "worker.log", "ab")  # noqa: SIM115 (lives with the child)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery_mcp", "worker", "--hostname", "demo@%h"],
            env=_env_for_children(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        print(
            f"celery-mcp: worker pid {worker.pid}, log {settings.data_dir / 'worker.log'}",
            file=sys.stderr,
        )
    if ns.transport == "http":
        print(
            f"celery-mcp: MCP over HTTP at http://{settings.host}:{settings.port}/mcp",
            file=sys.stderr,
        )
    from celery_mcp.server import run

    try:
        run(settings, "http" if ns.transport == "http" else "stdio")
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def cmd_worker(ns: argparse.Namespace, extra: list[str]) -> int:
    from celery_mcp import retry_policy
    from celery_mcp.app import make_app

    settings = _settings(ns)
    app = make_app(settings, worker=True)
    app.conf.worker_pool_restarts = True  # lets the pool_restart control command work
    retry_policy.install(app)
    from celery_mcp import worker_control  # registers the mcp_task_specs control command

    worker_control.task_specs(app)  # derive the task signatures once, before serving
    hostname = ns.hostname or "celery@%h"
    state_name = hostname.replace("%h", "host").replace("@", "_")
    argv = [
        "worker",
        f"--loglevel={ns.loglevel}",
        f"--hostname={hostname}",
        f"--pool={ns.pool}",
        f"--concurrency={ns.concurrency}",
        "--task-events",
        f"--statedb={settings.data_dir / f'worker-{state_name}.state'}",
    ]
    if ns.queues:
        argv.append(f"--queues={ns.queues}")
    app.worker_main([*argv, *extra])
    return 0


def cmd_broker(ns: argparse.Namespace) -> int:
    from celery_mcp import embedded

    settings = _settings(ns)
    data_dir = Path(settings.data_dir)
    server: embedded.EmbeddedServer | None
    if ns.op == "start":
        server = embedded.ensure_running(data_dir)
    elif ns.op == "stop":
        stopped = embedded.stop(data_dir)
        _print({"stopped": stopped, "data_dir": str(data_dir)})
        return 0
    else:
        server = embedded.read_state(data_dir)
    running = bool(server and embedded.ping(server))
    _print(
        {
            "running": running,
            "pid": server.pid if server else None,
            "url": f"redis://:***@127.0.0.1:{server.port}/0" if server else None,
            "data_dir": str(data_dir),
            "persistence": "AOF appendfsync everysec",
        }
    )
    return 0 if running or ns.op == "status" else 1


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _field_values(pairs: list[str]) -> dict[str, Any]:
    """`--task-name x --args '[1]'` -> {"task_name": "x", "args": [1]} (JSON where it parses)."""
    values: dict[str, Any] = {}
    key: str | None = None
    for token in pairs:
        if token.startswith("--"):
            name, eq, inline = token[2:].partition("=")
            key = name.replace("-", "_")
            values[key] = True  # a bare flag
            if eq:
                values[key], key = _decode(inline), None
        elif key is not None:
            values[key], key = _decode(token), None
        else:
            raise SystemExit(f"celery-mcp: unexpected argument {token!r}")
    return values


def _decode(text: str) -> Any:
    if text[:1] in '[{"' or text in ("true", "false", "null"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def cmd_action(ns: argparse.Namespace, extra: list[str]) -> int:
    from celery_mcp.errors import CeleryMcpError, InvalidArgument
    from celery_mcp.service.cluster import Cluster
    from celery_mcp.service.registry import load_operations

    operations = load_operations()
    name = ACTION_ALIASES.get(ns.action, ns.action)
    op = operations.get(name)
    if op is None:
        _error(
            InvalidArgument(f"unknown action {ns.action!r}", hint=f"one of {', '.join(operations)}")
        )
        return 2
    from pydantic import ValidationError

    try:
        request = op.input_model.model_validate(_field_values(extra))
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _error(InvalidArgument(msg, hint=f"see `celery-mcp --action {name} --help`"))
        return 2
    try:
        result = op.func(Cluster(_settings(ns)), request)
    except CeleryMcpError as exc:
        _error(exc)
        return 1
    print(result.model_dump_json(indent=2))
    return 0


def _error(exc: Any) -> None:
    _print({"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}})


def _action_help() -> str:
    from celery_mcp.service.registry import load_operations

    lines = ["actions (fields as --field-name VALUE; JSON for lists/objects):"]
    for op in load_operations().values():
        fields = " ".join(f"--{f.replace('_', '-')}" for f in op.input_model.model_fields)
        lines.append(f"  {op.name:24} {fields}")
    lines.append("  ping                     alias of ping_workers")
    return "\n".join(lines)


def _base_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celery-mcp",
        description="Operate a Celery cluster from AI agents (MCP), Python or this CLI.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `celery-mcp --action help` to list every action and its fields.",
    )
    parser.add_argument(
        "--action",
        help="run one operation and print JSON: send_task, get_result, "
        "inspect_workers, ping, health, ... (`--action help` lists all)",
    )
    _add_setting_flags(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _base_parser()
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the MCP server")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--with-worker", action="store_true", help="also run a demo worker")
    _add_setting_flags(serve)

    worker = sub.add_parser("worker", help="run a Celery worker on the same settings")
    worker.add_argument("--hostname", default=None, help="node name, e.g. w1@%%h")
    worker.add_argument("--queues", "-Q", default=None, help="comma-separated queues")
    worker.add_argument("--concurrency", "-c", type=int, default=2)
    worker.add_argument("--pool", "-P", default="prefork")
    worker.add_argument("--loglevel", "-l", default="INFO")
    _add_setting_flags(worker)

    broker = sub.add_parser("broker", help="the embedded Valkey server")
    broker.add_argument("op", choices=["status", "start", "stop"])
    _add_setting_flags(broker)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    is_action = any(a == "--action" or a.startswith("--action=") for a in argv)
    parser = _base_parser() if is_action else build_parser()
    ns, extra = parser.parse_known_args(argv)
    if ns.action == "help" or (ns.action and "--help" in extra):
        print(_action_help())
        return 0
    if ns.action:
        return cmd_action(ns, extra)
    if ns.command == "worker":
        return cmd_worker(ns, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command == "serve":
        return cmd_serve(ns)
    if ns.command == "broker":
        return cmd_broker(ns)
    parser.print_help()
    return 0
