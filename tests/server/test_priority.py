"""Worker threads, and the torch threads they start, run below the event loop's priority."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from styleserve_server.priority import BACKGROUND_NICE, background_thread


def _nice(tid: int) -> int:
    # Field 19 of /proc/<pid>/task/<tid>/stat (the 17th after the command's closing paren).
    with open(f"/proc/self/task/{tid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def _threads() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def _convolve() -> int:
    x = torch.rand(1, 32, 96, 96)
    torch.nn.functional.conv2d(x, torch.rand(32, 32, 3, 3), padding=1).sum()
    return threading.get_native_id()


def test_a_worker_and_the_torch_threads_it_starts_run_at_background_priority() -> None:
    before = _threads()
    with ThreadPoolExecutor(1, initializer=background_thread) as executor:
        worker = executor.submit(_convolve).result()
        started = _threads() - before
        assert worker in started
        assert {tid: _nice(tid) for tid in started} == dict.fromkeys(started, BACKGROUND_NICE)
    # The calling thread (the event loop's, in a server) keeps its own priority.
    assert _nice(threading.get_native_id()) < BACKGROUND_NICE
