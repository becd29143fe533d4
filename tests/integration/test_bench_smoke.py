"""`python -m bench --quick` runs end to end and prints its table (no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def test_bench_quick_runs_and_prints_the_table() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_MCP_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--workers", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| benchmark" in out and "| MCP" in out and "raw Celery" in out
    for row in ("send_task p50", "get_result of a finished task", "cold start", "chord of"):
        assert row in out, f"row {row!r} missing:\n{out}"
    assert "FAILED" not in out, out
