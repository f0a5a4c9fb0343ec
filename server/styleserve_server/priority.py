"""Background work runs at a lower CPU priority than the event loop that answers calls.

Jobs, request checks, decoding and encoding run in worker threads (torch and onnxruntime add
pools of their own); on a saturated machine the event loop, which answers health checks and
relays every stream's events, then waits for a core behind them, and kubelet's probes time out
while the work goes on. Each worker thread lowers its own priority when it starts (Linux nice
values are per thread, and the thread pools torch's OpenMP and onnxruntime create from such a
thread inherit it), so the loop runs as soon as it has something to do, and the work takes the
cores whenever the loop does not: its throughput stays the same when the loop is idle.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["BACKGROUND_NICE", "background_thread"]

log = logging.getLogger(__name__)

# Linux's scheduler gives a nice-10 thread about a tenth of a nice-0 thread's share of a
# contended core.
BACKGROUND_NICE = 10


def background_thread() -> None:
    """Lowers the calling thread's CPU priority to BACKGROUND_NICE (an executor's initializer);
    where the platform has no per-thread priority, or refuses it, the thread keeps its own."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if current < BACKGROUND_NICE:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError) as error:
        log.debug("worker thread priority unchanged: %s", error)
