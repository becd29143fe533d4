"""Starting and stopping the bench's worker and service processes (stdlib only: bench.catalog
is also a worker's app module, and imports this)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 60.0


def wait_ready(
    proc: subprocess.Popen[bytes], log_path: Path, what: str, deadline: float | None = None
) -> None:
    """Wait until a worker `proc` logs ` ready.` in `log_path` (by `deadline`, default 60 s
    from now); raise with the log's tail if it exits or the deadline passes first."""
    deadline = deadline or time.monotonic() + READY_TIMEOUT_S
    while b" ready." not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} did not start: {tail}")
        time.sleep(0.1)


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 15.0) -> None:
    """SIGTERM `proc`, then SIGKILL it if it has not exited within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
