"""Admission by memory: the server's budget, and refusing at once a job that could never fit it.

The budget is what the running jobs' predicted peaks may add up to (``admission.MemoryPool``
keeps the count); a job whose own peak is larger could never run, so it is refused before it
queues, with the largest size that would fit, instead of being OOM-killed with every other job
of the process. The peaks come from the engine's per-megapixel costs, measured on each device
(``engine.memory``); this module only holds them against the budget.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from styleserve.options import StyleOptions
from styleserve.plan import Stage, fit_longest_side, plan_climb

from styleserve_server.settings import MEMORY_SHARE

__all__ = ["TooBig", "check_fits", "measured_budget"]

# cgroup v1 reports "no limit" as a huge number rather than "max".
_NO_LIMIT = 2**60


def _cgroup_limit() -> int | None:
    """The container's memory limit, if it has one (cgroup v2, else v1)."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _NO_LIMIT:
            return int(text)
    return None


def _status_bytes(field: str) -> int:
    """A ``kB`` field of this process's /proc status (0 where there is none)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def _device_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return physical if limit is None else min(physical, limit)


def _resident_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.memory_reserved(device))
    return _status_bytes("VmRSS")


def measured_budget(device: torch.device, stores: int) -> int:
    """The default budget on ``device``: a share of its memory (on CPU the container's limit
    where it is lower than the machine's) less what the process holds already (call it once
    the weights are loaded and warmed up). ``stores`` is what the server's in-memory stores
    (uploads, registered styles, kept jobs) may fill: on CPU they share the jobs' memory, so
    their caps come off the budget too, and a full upload store never leaves a running job
    short; a GPU's jobs do not share it."""
    held = _resident_bytes(device) + (stores if device.type == "cpu" else 0)
    return max(0, int(MEMORY_SHARE * _device_bytes(device)) - held)


class TooBig(Exception):
    """A job whose predicted peak memory is more than the server's whole budget; ``fits`` is
    the largest longest side that would fit (None: none), said as a width and height at the
    aspect ratio of ``sized`` where the request set its width and height (which override its
    size)."""

    def __init__(
        self, peak: int, budget: int, fits: int | None, sized: tuple[int, int] | None = None
    ) -> None:
        if fits is None:
            advice = (
                "no size of this job fits: send smaller pictures (they are decoded whole), "
                "fewer styles or another preset"
            )
        elif sized is not None:
            width, height = fit_longest_side(sized, fits)
            advice = f"ask for width and height <= {width}x{height} (this aspect ratio)"
        else:
            advice = f"ask for size <= {fits} (the longest side)"
        super().__init__(
            f"this job would need about {peak / 2**30:.1f} GiB of memory at its peak, more than "
            f"the {budget / 2**30:.1f} GiB this server's jobs may hold (memory_budget_bytes): "
            f"{advice}, or use a server with a larger budget"
        )


def _largest_fitting(
    output: tuple[int, int],
    options: StyleOptions,
    smallest: int,
    peak: Callable[[Sequence[Stage]], int],
    budget: int,
) -> int | None:
    """The longest output side (at the output's aspect ratio) whose job fits ``budget``; None
    when not even ``smallest`` does. A peak grows with the size, so a bisection finds it."""

    def fits(side: int) -> bool:
        size = fit_longest_side(output, side)
        return peak(plan_climb(size, options.scales, options.iterations)) <= budget

    low, high = smallest, max(output) - 1
    if not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def check_fits(
    stages: Sequence[Stage],
    options: StyleOptions,
    smallest: int,
    peak: Callable[[Sequence[Stage]], int],
    budget: int,
) -> int:
    """The predicted peak of a job of ``stages``, which must fit ``budget``. Raises TooBig
    naming the largest size (or width and height, where ``options`` set them) that would (at
    least ``smallest`` on the longest side), found in a few dozen predictions: arithmetic, no
    work."""
    needed = peak(stages)
    if needed <= budget:
        return needed
    output = (stages[-1].width, stages[-1].height)
    fits = _largest_fitting(output, options, smallest, peak, budget)
    raise TooBig(needed, budget, fits, output if options.width and options.height else None)
