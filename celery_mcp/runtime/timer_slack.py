"""Timed waits that end on time: the server process's timer slack, set to 1 ns (Linux).

Linux lets a sleeping thread's timer fire up to its "timer slack" late (50 us by default), so
that wake-ups can be merged. Celery's result consumer calls `time.sleep(0)` after every result
message (a yield for green threads), and each such sleep costs the slack: 70-80 us measured
on a 2-CPU VM, twice per task that reports STARTED. A server answering one call at a time
pays it on every wait; with 1 ns, send_task(wait_s) was 0.3-0.9 ms faster over stdio
(4 rounds of 300 calls each, side by side with the same server at the default slack).

The slack is per thread and inherited by the threads a thread starts (and by a child process
across fork and exec), so `tighten()` runs in the main thread before the server starts its
threads, and after `serve` has started its worker and monitor, which keep the default.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("celery_mcp.timer_slack")

#: prctl(2) option and the slack asked for (ns; 0 would mean "the default again").
PR_SET_TIMERSLACK = 29
SLACK_NS = 1


def tighten() -> bool:
    """Set this thread's timer slack to 1 ns; True when it was set (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = int(libc.prctl(PR_SET_TIMERSLACK, SLACK_NS, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        done = False
    if not done:
        log.debug("timer slack left at the default (prctl failed)")
    return done
