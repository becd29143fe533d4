"""Who a pid is: its name and start time, so a recycled pid is never taken for another process.

A pid alone names a process only while it lives: after it exits (or the machine reboots) the
number goes to someone else. `identity(pid)` reads what the pid is now; a process is the same
one it was when its `Identity` is equal. Linux reads /proc/<pid>/stat (start time in clock
ticks since boot, with the boot id); elsewhere (macOS) `ps -o lstart=` (start time, to the
second). Zombies count as gone.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

PS_TIMEOUT_S = 2.0
_PROC = Path("/proc")


@dataclass(frozen=True)
class Identity:
    """The name (executable, as the OS reports it) and start time of a live process."""

    name: str
    started: str


def identity(pid: int) -> Identity | None:
    """What `pid` is now, or None when no such (live) process exists or it cannot be told."""
    if pid <= 0:
        return None
    if (_PROC / "self" / "stat").exists():
        return _from_proc(pid)
    return _from_ps(pid)


def _from_proc(pid: int) -> Identity | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ... starttime ...": comm may hold spaces and parentheses
    head, _, rest = stat.rpartition(")")
    name = head.partition("(")[2]
    fields = rest.split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return Identity(name=name, started=f"proc:{boot}:{fields[19]}")  # field 22: starttime


def _from_ps(pid: int) -> Identity | None:
    try:
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "stat=", "-o", "lstart=", "-o", "comm="],
            capture_output=True,
            text=True,
            timeout=PS_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # "S    Mon Jan  1 00:00:00 2024 /path/to/comm": lstart is five words
    parts = out.split(None, 6)
    if len(parts) < 7 or parts[0].startswith("Z"):
        return None
    return Identity(name=os.path.basename(parts[6]), started="ps:" + " ".join(parts[1:6]))
