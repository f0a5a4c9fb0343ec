"""The admission controller on its own: slots, memory, order, positions, refusal, hand-over,
drain."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from styleserve_server.admission import Admission, MemoryPool, QueueFull, ShuttingDown


async def hold(admission: Admission, positions: list[int], nbytes: int = 0) -> None:
    """Waits for a slot (and ``nbytes`` of memory), recording every position heard on the way."""
    async with contextlib.aclosing(admission.wait(nbytes)) as waiting:
        async for position in waiting:
            positions.append(position)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def waiting(admission: Admission, nbytes: int) -> asyncio.Task[None]:
    """A caller asking ``admission`` for ``nbytes``, once it has had its answer or its place."""
    task = asyncio.create_task(hold(admission, [], nbytes=nbytes))
    await settle()
    return task


async def test_slots_are_granted_in_arrival_order_and_positions_follow():
    admission = Admission(slots=1, queue_size=3)
    await hold(admission, [])
    heard: list[list[int]] = [[], [], []]
    waiters = [asyncio.create_task(hold(admission, h)) for h in heard]
    await settle()
    assert heard == [[0], [1], [2]] and admission.queued == 3
    admission.release()
    await settle()
    assert waiters[0].done() and not waiters[1].done()
    assert heard == [[0], [1, 0], [2, 1]] and admission.running == 1
    admission.release()
    admission.release()
    await asyncio.gather(*waiters)
    assert heard == [[0], [1, 0], [2, 1, 0]] and admission.running == 1


async def test_a_full_queue_refuses_with_a_retry_estimate():
    admission = Admission(slots=2, queue_size=1)
    await hold(admission, [])
    await hold(admission, [])
    waiter = asyncio.create_task(hold(admission, []))
    await settle()
    admission.release(job_seconds=60)  # one slot frees (the waiter takes it): jobs are long
    await settle()
    assert waiter.done()
    other = asyncio.create_task(hold(admission, []))
    await settle()
    with pytest.raises(QueueFull) as refused:
        await hold(admission, [])
    # Beyond what the initial 10 s guess gives (10 s x 2 places / 2 slots): it followed the 60 s.
    assert refused.value.retry_after > 10
    other.cancel()


async def test_a_cancelled_waiter_leaves_the_queue_and_never_holds_a_slot():
    admission = Admission(slots=1, queue_size=2)
    await hold(admission, [])
    behind: list[int] = []
    first = asyncio.create_task(hold(admission, []))
    second = asyncio.create_task(hold(admission, behind))
    await settle()
    first.cancel()
    await settle()
    assert admission.queued == 1 and behind == [1, 0]
    admission.release()
    await second
    assert admission.running == 1 and admission.queued == 0


async def test_a_slot_granted_to_a_caller_being_cancelled_passes_on():
    admission = Admission(slots=1, queue_size=2)
    await hold(admission, [])
    first = asyncio.create_task(hold(admission, []))
    second = asyncio.create_task(hold(admission, []))
    await settle()
    admission.release()  # granted to first...
    first.cancel()  # ...which is cancelled before it runs again
    await asyncio.gather(first, return_exceptions=True)
    await second
    assert admission.running == 1


async def test_closing_turns_waiters_and_newcomers_away_and_idle_follows_the_last_job():
    admission = Admission(slots=1, queue_size=2)
    await hold(admission, [])
    waiter = asyncio.create_task(hold(admission, []))
    await settle()
    admission.close()
    with pytest.raises(ShuttingDown):
        await waiter
    with pytest.raises(ShuttingDown):
        await hold(admission, [])
    idle = asyncio.create_task(admission.idle())
    await settle()
    assert not idle.done()
    admission.release()
    await asyncio.wait_for(idle, 5)


async def test_a_job_waits_for_memory_with_a_slot_free_and_is_not_overtaken():
    memory = MemoryPool(budget=100)
    admission = Admission(slots=3, queue_size=3, memory=memory)
    await hold(admission, [], nbytes=60)
    big = asyncio.create_task(hold(admission, [], nbytes=50))
    small = asyncio.create_task(hold(admission, [], nbytes=10))
    await settle()
    # 40 bytes are free and a slot too, but the big job came first: the small one waits behind.
    assert not big.done() and not small.done() and memory.used == 60
    admission.release(nbytes=60)
    await asyncio.gather(big, small)
    assert memory.used == 60 and admission.running == 2


async def test_the_tiers_share_one_memory_budget():
    memory = MemoryPool(budget=100)
    jobs = Admission(slots=1, queue_size=1, memory=memory)
    instant = Admission(slots=1, queue_size=1, memory=memory)
    await hold(instant, [], nbytes=80)
    job = asyncio.create_task(hold(jobs, [], nbytes=30))
    await settle()
    assert not job.done()
    instant.release(nbytes=80)  # the other tier's memory frees: this tier's waiter goes
    await job
    assert memory.used == 30


def two_tiers(instant_slots: int) -> tuple[MemoryPool, Admission, Admission]:
    """A budget of 100 bytes shared by the optimisation's two slots and the instant tier's."""
    memory = MemoryPool(budget=100)
    jobs = Admission(slots=2, queue_size=2, memory=memory)
    return memory, jobs, Admission(instant_slots, instant_slots, memory=memory)


async def test_a_job_waiting_for_memory_is_not_overtaken_by_the_other_tiers_jobs():
    memory, jobs, instant = two_tiers(instant_slots=4)
    await hold(instant, [], nbytes=40)
    big = await waiting(jobs, 80)
    # An instant job that would fit beside the running one waits: the big job is ahead.
    small = await waiting(instant, 40)
    assert not big.done() and not small.done() and memory.used == 40
    instant.release(nbytes=40)
    await big
    await settle()
    assert memory.used == 80 and not small.done()
    jobs.release(nbytes=80)  # the big job's memory frees: the instant job goes
    await small
    assert memory.used == 40


async def test_heads_of_both_tiers_waiting_for_memory_go_in_the_order_they_began():
    memory, jobs, instant = two_tiers(instant_slots=2)
    await hold(jobs, [], nbytes=70)
    first = await waiting(instant, 60)
    second = await waiting(jobs, 60)
    jobs.release(nbytes=70)
    await first
    await settle()
    assert not second.done() and memory.used == 60
    instant.release(nbytes=60)
    await second
    assert memory.used == 60
    # Closing a tier lets the other go: nothing waits on a queue that is gone.
    refused = await waiting(jobs, 60)
    later = await waiting(instant, 30)
    assert not later.done()
    jobs.close()
    with pytest.raises(ShuttingDown):
        await refused
    await later
    assert memory.used == 90


async def test_a_cancelled_holder_gives_its_memory_back():
    memory = MemoryPool(budget=100)
    admission = Admission(slots=2, queue_size=2, memory=memory)
    await hold(admission, [], nbytes=70)
    waiter = asyncio.create_task(hold(admission, [], nbytes=70))
    await settle()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert memory.used == 70 and admission.queued == 0
    admission.release(nbytes=70)
    assert memory.used == 0 and admission.running == 0
