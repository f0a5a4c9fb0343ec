"""Work on a slot, on its own: the slot and its memory are freed exactly once, when the thread
lets go or at once when the work cannot start, and the drain's stop reaches running work only."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from styleserve_server.admission import Admission, MemoryPool
from styleserve_server.metrics import Metrics
from styleserve_server.workers import Workers

MIB = 2**20


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


async def slot(nbytes: int) -> tuple[Admission, MemoryPool]:
    """An admission of one slot over 64 MiB, that slot taken with ``nbytes`` of memory."""
    memory = MemoryPool(64 * MIB)
    admission = Admission(slots=1, queue_size=1, memory=memory)
    async with contextlib.aclosing(admission.wait(nbytes)) as positions:
        async for _ in positions:
            pass
    return admission, memory


def duration_count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "styleserve_job_duration_seconds_count", {"outcome": outcome}
    )
    return value or 0.0


async def test_a_job_frees_its_slot_and_memory_when_its_thread_ends_and_counts_its_outcome(
    executor: ThreadPoolExecutor,
) -> None:
    metrics = Metrics()
    workers = Workers(metrics)
    admission, memory = await slot(48 * MIB)
    assert not memory.fits(32 * MIB)
    cancel, go = threading.Event(), threading.Event()
    future = workers.start_job(
        lambda: "finished" if go.wait(10) else "stuck",
        cancel,
        executor=executor,
        admission=admission,
        nbytes=48 * MIB,
    )
    await asyncio.sleep(0.05)
    assert admission.running == 1 and not future.done()
    go.set()
    assert await future == "finished"
    await asyncio.sleep(0)  # the done callbacks
    assert admission.running == 0 and memory.fits(64 * MIB)
    assert duration_count(metrics, "finished") == 1
    workers.stop_all()
    assert not cancel.is_set(), "the drain's stop reached work that had ended"


async def test_the_drains_stop_sets_the_cancel_of_running_work(
    executor: ThreadPoolExecutor,
) -> None:
    workers = Workers(Metrics())
    admission, _ = await slot(0)
    cancel = threading.Event()
    released: list[asyncio.Future[bool] | None] = []

    def release(future: asyncio.Future[bool] | None) -> None:
        released.append(future)
        admission.release()

    future = workers.start(lambda: cancel.wait(10), cancel, executor, release)
    await asyncio.sleep(0.05)
    assert released == []
    workers.stop_all()
    assert await asyncio.wait_for(future, 5) is True
    await asyncio.sleep(0)
    assert released == [future] and admission.running == 0


async def test_work_that_cannot_start_frees_its_slot_at_once_and_only_once() -> None:
    metrics = Metrics()
    workers = Workers(metrics)
    admission, memory = await slot(48 * MIB)
    closed = ThreadPoolExecutor(1)
    closed.shutdown()
    cancel = threading.Event()
    with pytest.raises(RuntimeError):
        workers.start_job(
            lambda: "finished", cancel, executor=closed, admission=admission, nbytes=48 * MIB
        )
    assert admission.running == 0 and memory.fits(64 * MIB)
    # No seconds: a job that never ran tells the retry hint nothing.
    assert duration_count(metrics, "finished") == 0
    workers.stop_all()
    assert not cancel.is_set()
