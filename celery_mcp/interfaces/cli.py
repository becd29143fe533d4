"""Command line: `celery-mcp serve | worker | beat | monitor | broker` and `--action NAME ...`.

`--action` runs one operation through the same funnel as the MCP tools (`funnel.invoke`:
read-only mode, toolsets, validation) and prints its output model as JSON; on failure it prints
`{"error": {"code", "message", "hint"}}` and exits non-zero.

The heavy modules are imported by the command that runs them: the MCP SDK (0.5 s) by `serve`
only, Celery, kombu and redis (about 0.2 s) by the commands that talk to a broker, so `serve`
answers `initialize` before Celery is loaded and `--help` loads neither.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from celery_mcp.config import Settings
from celery_mcp.errors import CeleryMcpError, Forbidden, InvalidArgument, detail
from celery_mcp.interfaces.mcp.http_security import (
    TOKEN_FILE,
    check_bind,
    load_or_create_token,
    with_token,
)
from celery_mcp.logs import setup_logging
from celery_mcp.runtime import embedded
from celery_mcp.service import funnel, registry

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


def _settings(ns: argparse.Namespace, **extra: Any) -> Settings:
    keys = [*SETTING_FLAGS.values(), "read_only", "log_level"]
    overrides = {k: getattr(ns, k) for k in keys if getattr(ns, k, None) is not None}
    overrides.update({k: v for k, v in extra.items() if v is not None})
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise SystemExit(f"celery-mcp: invalid setting {first['loc'][0]}: {first['msg']}") from None


def _env_for_children(settings: Settings) -> dict[str, str]:
    """Environment that makes a child `celery-mcp` use the same settings.

    On the embedded server the child finds it itself (the URLs hold its password).
    """
    env = {k: v for k, v in os.environ.items() if k != "CELERY_MCP_AUTH_TOKEN"}  # HTTP only
    urls = () if settings.embedded else ("broker_url", "result_backend")
    for key in (*urls, "app", "data_dir"):
        value = getattr(settings, key)
        if value is not None:
            env[f"CELERY_MCP_{key.upper()}"] = str(value)
    return env


def cmd_serve(ns: argparse.Namespace) -> int:
    settings = _settings(ns, host=ns.host, port=ns.port)
    setup_logging(settings.log_level)
    generated = False
    sock = None
    if ns.transport == "http":
        try:
            check_bind(settings)
            generated = settings.auth_token is None and settings.http_auth
            settings = with_token(settings)
        except Forbidden as exc:
            raise SystemExit(f"celery-mcp: {exc}") from None
        sock = _bind(settings)  # before any child starts: a taken port stops here
        settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    worker = None
    monitor = None
    if ns.with_worker:
        # the embedded Valkey (when it is the broker) is started here, not by a child, so the
        # line saying where goes to this stderr rather than a child's log
        settings = embedded.resolve(settings)
        monitor = _spawn_monitor(settings)
        # one name per serve process: two servers on one broker must not both be demo@host
        hostname = f"demo-{os.getpid()}@{socket.gethostname()}"
        worker = _spawn_child(
            settings,
            ["worker", "--hostname", hostname, "--parent-pid", str(os.getpid())],
            "worker.log",
        )
        settings = settings.model_copy(
            update={"own_worker": hostname, "own_worker_since": time.time()}
        )
        print(
            f"celery-mcp: worker {hostname} (pid {worker.pid}) starting, log "
            f"{settings.data_dir / 'worker.log'}",
            file=sys.stderr,
        )
    from celery_mcp.interfaces.mcp.server import run  # the MCP SDK (0.6 s): `serve` only

    def ready() -> None:
        print(f"celery-mcp: {_http_banner(settings, generated)}", file=sys.stderr, flush=True)

    def wind_down() -> None:
        _stop_child(monitor)
        _stop_child(worker)
        if worker is not None:
            _forget_worker_state(settings, str(settings.own_worker))
        _say_embedded_left_running(settings)

    # clients stop stdio servers with SIGTERM. Under HTTP uvicorn takes SIGINT/SIGTERM while it
    # serves, shuts down gracefully, then restores these handlers and raises the signal again:
    # so they run there too (with Python's default the process died before winding down)
    _exit_on((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), wind_down)
    try:
        run(settings, "http" if ns.transport == "http" else "stdio", sock=sock, on_ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        wind_down()
    return 0


def _bind(settings: Settings) -> socket.socket:
    """The HTTP listening socket, bound (uvicorn listens on it), or exit with one line."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"celery-mcp: cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
            "pick another port with --port (or stop what holds it)"
        ) from None
    sock.set_inheritable(False)
    return sock


def _forget_worker_state(settings: Settings, hostname: str) -> None:
    """Remove the statedb of a worker named for one serve process (no one reuses it)."""
    for path in settings.data_dir.glob(f"worker-{_state_name(hostname)}.state*"):
        path.unlink(missing_ok=True)


def _say_embedded_left_running(settings: Settings) -> None:
    """One stderr line at exit: the embedded Valkey stays up for the other processes."""
    if not settings.embedded:
        return
    server = embedded.read_state(settings.data_dir)
    if server is not None and embedded.ping(server):
        print(
            f"celery-mcp: the embedded Valkey (pid {server.pid}, 127.0.0.1:{server.port}, data "
            f"{settings.data_dir}) keeps running for other sessions; stop it with "
            "`celery-mcp broker stop`",
            file=sys.stderr,
        )


def _http_banner(settings: Settings, generated: bool) -> str:
    """Where to connect, with the header to send (ready to paste)."""
    url = f"http://{settings.host}:{settings.port}/mcp"
    if settings.auth_token is None:
        return f"MCP over HTTP at {url} (no token: http_auth is off)"
    if generated:
        where = f"; token kept in {settings.data_dir / TOKEN_FILE}, `celery-mcp http-token`"
        header = f"Authorization: Bearer {settings.auth_token.get_secret_value()}"
    else:  # the operator's own token: never echoed
        where, header = "", "Authorization: Bearer $CELERY_MCP_AUTH_TOKEN"
    return f"MCP over HTTP at {url} with header '{header}'{where}"


def cmd_http_token(ns: argparse.Namespace) -> int:
    """Print the generated HTTP token (created when missing), e.g. for `--header`."""
    settings = _settings(ns)
    try:
        print(load_or_create_token(settings.data_dir))
    except Forbidden as exc:
        raise SystemExit(f"celery-mcp: {exc}") from None
    return 0


def _exit_on(signals: tuple[signal.Signals, ...], wind_down: Callable[[], None]) -> None:
    """On any of `signals`, run `wind_down` (stop the children), then exit. A stdio server
    cannot wind down by itself while its client keeps stdin open (the read blocks a thread),
    and Python's default for SIGTERM/SIGHUP ends it at once, leaving the children running."""

    def stop(signum: int, _frame: Any) -> None:
        wind_down()
        os._exit(128 + signum)

    for sig in signals:
        signal.signal(sig, stop)


def _exit_with_parent(parent_pid: int) -> None:
    """Stop this process (SIGTERM: a warm shutdown) once `parent_pid` is gone, even killed."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        print(f"celery-mcp: parent {parent_pid} exited; stopping", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _spawn_child(settings: Settings, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
    """Start `celery-mcp ARGS` on the same settings, its output in the data dir's `log_name`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.data_dir / log_name, "ab")  # noqa: SIM115 (lives with the child)
    return subprocess.Popen(
        [sys.executable, "-m", "celery_mcp", *args],
        env=_env_for_children(settings),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )


def _spawn_monitor(settings: Settings) -> subprocess.Popen[bytes]:
    """Start `celery-mcp monitor` (the task-history recorder) as a child that exits with us."""
    return _spawn_child(settings, ["monitor", "--parent-pid", str(os.getpid())], "monitor.log")


def _stop_when_gone(child: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    """Stop this process (SIGTERM: a warm shutdown) if `child` exits on its own, saying why on
    stderr: a worker whose monitor died records nothing, which nobody would notice."""

    def watch() -> None:
        rc = child.wait()
        if rc in (0, -signal.SIGTERM):  # stopped by us, or cleanly
            return
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        lines = "\n  ".join(tail)
        print(
            f"celery-mcp: the {what} exited (rc={rc}); stopping. {log_path}:\n  {lines}",
            file=sys.stderr,
        )
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name=f"watch-{what}", daemon=True).start()


def _stop_child(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def cmd_monitor(ns: argparse.Namespace) -> int:
    from celery_mcp.runtime.monitor import run  # Celery (0.28 s): only commands that need it

    settings = _settings(ns)
    setup_logging(settings.log_level)
    run(settings, parent_pid=ns.parent_pid)
    return 0


def cmd_worker(ns: argparse.Namespace, extra: list[str]) -> int:
    from celery_mcp.app import make_app  # Celery (0.2 s): only commands that need it
    from celery_mcp.runtime.worker import setup  # Celery's worker modules: `worker` only

    settings = _settings(ns)
    app = make_app(embedded.resolve(settings), worker=True)
    setup.prepare(app)
    hostname = ns.hostname or "celery@%h"
    state_name = _state_name(hostname)
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
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the statedb lives there
    if ns.parent_pid:
        _exit_with_parent(ns.parent_pid)
    monitor = _spawn_monitor(settings) if ns.monitor else None
    if monitor is not None:
        _stop_when_gone(monitor, settings.data_dir / "monitor.log", "monitor")
    try:
        app.worker_main([*argv, *extra])
    finally:
        _stop_child(monitor)
    return 0


def _state_name(hostname: str) -> str:
    """The part of a worker's statedb file name its hostname gives."""
    return hostname.replace("%h", "host").replace("@", "_")


def cmd_beat(ns: argparse.Namespace) -> int:
    from celery_mcp.runtime.beat import run  # Celery and RedBeat (0.3 s): `beat` only

    run(
        _settings(ns),
        max_interval_s=ns.max_interval,
        lock_timeout_s=ns.lock_timeout,
        loglevel=ns.loglevel,
    )
    return 0


def cmd_broker(ns: argparse.Namespace) -> int:
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
    name = ACTION_ALIASES.get(ns.action, ns.action)
    help_hint = f"see `celery-mcp --action {ns.action} --help`"
    try:
        settings = _settings(ns)
    except SystemExit as exc:
        _error(InvalidArgument(str(exc.code), hint="see `celery-mcp --help` for the settings"))
        return 2
    try:
        call = funnel.prepare(name, settings, _field_values(extra), "cli")
    except SystemExit as exc:  # a malformed field list
        _error(InvalidArgument(str(exc.code), hint=help_hint))
        return 2
    except InvalidArgument as exc:
        _error(exc)
        return 2
    except CeleryMcpError as exc:  # refused by policy
        _error(exc)
        return 1
    try:
        from celery_mcp.runtime.connect import open_cluster  # Celery (0.27 s): once allowed

        result = call.run(open_cluster(settings))
    except CeleryMcpError as exc:
        _error(exc)
        return 1
    except Exception as exc:  # still JSON on stdout, never a bare traceback
        _error(exc)
        return 1
    print(result.model_dump_json(indent=2))
    return 0


def _error(exc: BaseException) -> None:
    _print({"error": detail(exc).model_dump()})


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")


def _action_list() -> str:
    """Every action with its first sentence and its fields (`--action help`, `--help`)."""
    aliases = {target: alias for alias, target in ACTION_ALIASES.items()}
    lines = ["actions (`celery-mcp --action NAME --field-name VALUE ...`; JSON for lists/objects;"]
    lines.append("`celery-mcp --action NAME --help` details one):")
    for op in registry.OPERATIONS.values():
        alias = f" (alias: {aliases[op.name]})" if op.name in aliases else ""
        flags = " ".join(
            f"--{f.replace('_', '-')}" + ("" if field.is_required() else "?")
            for f, field in op.input_model.model_fields.items()
        )
        lines.append(f"  {op.name}{alias}  [{op.toolset}]  {_first_sentence(op.description)}")
        if flags:
            lines.append(f"      {flags}")
    lines.append("fields marked ? are optional. Output: JSON on stdout; on failure")
    lines.append('{"error": {"code", "message", "hint"}} and exit 1 (2 for bad input).')
    return "\n".join(lines)


def _action_help(name: str) -> str:
    """One action: description, safety flags and each field's type, default and description."""
    op = registry.OPERATIONS.get(ACTION_ALIASES.get(name, name))
    if op is None:
        return _action_list()
    flags = ["read-only" if op.read_only else "changes state"]
    if op.destructive:
        flags.append("destructive")
    lines = [f"celery-mcp --action {name}  [{op.toolset}; {', '.join(flags)}]", ""]
    lines += textwrap.wrap(op.description, 96)
    lines += ["", "fields:"]
    schema = op.input_model.model_json_schema()
    for field_name, field in op.input_model.model_fields.items():
        prop = schema.get("properties", {}).get(field_name, {})
        kind = prop.get("type") or " | ".join(
            str(p.get("type", p.get("$ref", "?")).rsplit("/", 1)[-1]) for p in prop.get("anyOf", [])
        )
        default = (
            "required"
            if field.is_required()
            else f"default {json.dumps(field.get_default(call_default_factory=True), default=str)}"
        )
        lines.append(f"  --{field_name.replace('_', '-')} ({kind or 'any'}; {default})")
        if field.description:
            lines += textwrap.wrap(
                field.description, 92, initial_indent="      ", subsequent_indent="      "
            )
    if not op.input_model.model_fields:
        lines.append("  (none)")
    return "\n".join(lines)


def _base_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celery-mcp",
        description="Operate a Celery cluster from AI agents (MCP), Python or this CLI.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `celery-mcp --help` or `--action help` to list every action and its fields.",
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
    worker.add_argument("--monitor", action="store_true", help="also record task history")
    worker.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    _add_setting_flags(worker)

    beat = sub.add_parser("beat", help="run Celery beat (RedBeat scheduler) on the same settings")
    beat.add_argument(
        "--max-interval",
        type=float,
        default=1.0,
        help="longest sleep between schedule checks, seconds (bounds how late a new entry fires)",
    )
    beat.add_argument(
        "--lock-timeout",
        type=float,
        default=None,
        help="seconds a dead beat's lock outlives it before a standby takes over "
        "(default: 5 x --max-interval, at least 5; at least 2 x --max-interval)",
    )
    beat.add_argument("--loglevel", "-l", default="INFO")
    _add_setting_flags(beat)

    monitor = sub.add_parser("monitor", help="record task history from Celery events")
    monitor.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    _add_setting_flags(monitor)

    broker = sub.add_parser("broker", help="the embedded Valkey server")
    broker.add_argument("op", choices=["status", "start", "stop"])
    _add_setting_flags(broker)

    token = sub.add_parser("http-token", help="print the HTTP bearer token serve generated")
    _add_setting_flags(token)
    return parser


def _action_name(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--action="):
            return arg.partition("=")[2]
        if arg == "--action" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _names_subcommand(parser: argparse.ArgumentParser, argv: list[str]) -> bool:
    """True when `argv` names a subcommand (its own --help is about that subcommand)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return any(arg in action.choices for arg in argv)
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    is_action = any(a == "--action" or a.startswith("--action=") for a in argv)
    parser = _base_parser() if is_action else build_parser()
    wants_help = bool({"-h", "--help"} & set(argv))
    if is_action and wants_help:  # `--action NAME --help`: that action's fields
        name = _action_name(argv)
        print(_action_list() if name in (None, "help") else _action_help(name))
        return 0
    if not is_action and wants_help and not _names_subcommand(parser, argv):
        parser.epilog = _action_list()  # `celery-mcp --help` documents every action too
    ns, extra = parser.parse_known_args(argv)
    if ns.action == "help" or (ns.action and {"-h", "--help"} & set(extra)):
        print(_action_list() if ns.action == "help" else _action_help(ns.action))
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
    if ns.command == "monitor":
        return cmd_monitor(ns)
    if ns.command == "beat":
        return cmd_beat(ns)
    if ns.command == "http-token":
        return cmd_http_token(ns)
    parser.print_help()
    return 0
