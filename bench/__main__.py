"""`python -m bench [--quick]`: every benchmark, one private cluster, one table.

Starts an embedded Valkey in a temporary data dir and real `celery-mcp worker` processes,
drives `celery-mcp serve` over stdio with the official MCP client, measures the same operations
with raw Celery in this process, prints the table (Markdown) and stops everything it started.
Every other module in bench/ (other toolsets' benchmarks: workflows, catalog, history, ...) is
included: one with an `async def rows(run) -> list[Row]` adds rows to the table (sharing this
cluster and MCP session), any other runs as `python -m bench.<name>` after it, its output
appended (not with --quick, which the CI smoke uses).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import anyio

from bench.harness import Row, Run, bench_env, render

#: Our benchmark modules, in table order (startup last: it reads the warm server's memory).
CORE = ("bench.tasks", "bench.cluster")
LAST = "bench.startup"
#: Modules of bench/ that are not benchmarks.
SUPPORT = (
    "bench.harness",
    "bench.processes",
    "bench.floor_server",
    "bench.flower_app",
    "bench.user_app",
    "bench.__main__",
)


def _others() -> list[str]:
    """Every other module in bench/ (other toolsets' benchmarks), by name."""
    import bench

    mine = {*CORE, LAST, *SUPPORT}
    found = (f"bench.{m.name}" for m in pkgutil.iter_modules(bench.__path__))
    return sorted(name for name in found if name not in mine)


def _has_rows(name: str) -> bool:
    """True when module `name` defines `rows(run)` (read, not imported: no side effects)."""
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec else None
    return bool(origin) and "async def rows(run" in Path(str(origin)).read_text()


async def _rows_of(module: ModuleType, run: Run) -> list[Row]:
    rows_fn: Callable[[Run], Awaitable[list[Row]]] = module.rows
    try:
        return await rows_fn(run)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return [Row(f"{module.__name__} FAILED", None, note=f"{type(exc).__name__}: {exc}")]


def _header(argv: list[str], workers: int) -> str:
    from importlib.metadata import version

    import celery

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"command: python -m bench {' '.join(argv)}".rstrip()
        + f"\ndate: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs, load {load}; "
        f"Python {platform.python_version()}, mcp {version('mcp')}, celery {celery.__version__}"
        f"; embedded Valkey; {workers} prefork workers x 2 processes\n"
        "times in ms unless noted; MCP = official ClientSession over stdio to celery-mcp serve "
        "--toolsets all (cold start: default toolsets); "
        "raw = Celery in the bench process, same broker, same run\n"
    )


def _selected(only: str | None) -> list[str]:
    """The benchmark modules to run, in table order: all, or those `only` names ("tasks,...")."""
    every = [*CORE, *_others(), LAST]
    if not only:
        return every
    wanted = {f"bench.{n.strip().removeprefix('bench.')}" for n in only.split(",")}
    unknown = wanted - set(every)
    if unknown:
        raise SystemExit(f"no benchmark module {', '.join(sorted(unknown))}; see bench/")
    return [name for name in every if name in wanted]


async def _main(quick: bool, workers: int, argv: list[str], only: str | None = None) -> int:
    rows: list[Row] = []
    external: list[str] = []
    with bench_env(workers=workers) as env:
        async with env.session("--toolsets", "all") as session:  # every tool measurable
            tools = {tool.name for tool in (await session.list_tools()).tools}
            run = Run(env=env, session=session, quick=quick, tools=tools)
            for name in _selected(only):
                if _has_rows(name):
                    rows += await _rows_of(importlib.import_module(name), run)
                else:
                    external.append(name)
    print(_header(argv, workers))
    print(render(rows))
    if quick and external:
        print(f"\nnot run with --quick (standalone scripts): {', '.join(external)}")
        external = []
    for name in external:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", name], capture_output=True, text=True, timeout=600
        )
        print(f"\n## {name} ({time.perf_counter() - start:.1f} s, exit {proc.returncode})")
        print(proc.stdout.rstrip() or proc.stderr.rstrip()[-2000:])
    return 1 if any(r.name.endswith("FAILED") for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny iteration counts (CI smoke)")
    parser.add_argument("--workers", type=int, default=2, help="demo workers to start")
    parser.add_argument(
        "--only", metavar="NAMES", help="only these bench modules, e.g. tasks,user_cluster"
    )
    ns = parser.parse_args(argv)
    return anyio.run(_main, ns.quick, ns.workers, argv, ns.only)


if __name__ == "__main__":
    sys.exit(main())
