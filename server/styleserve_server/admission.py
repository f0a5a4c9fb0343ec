"""Admission control: a fixed number of job slots, a memory budget, and a bounded, ordered
queue in front.

gRPC's ``maximum_concurrent_rpcs`` would refuse health checks and cannot tell a waiting
caller where it stands, so the service admits jobs itself: a caller either gets a slot, waits
in the queue (learning its position each time it moves), or is turned away at once with an
estimate of when to come back. A slot also holds the job's predicted peak memory in a
``MemoryPool`` that both tiers share: the head of a queue waits until its memory is free as
well as a slot, so that jobs that fit the budget alone never run out of memory together (and
a big job is not overtaken forever by small ones, of its own tier or the other). Everything
here runs on the event loop, so no locks.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
from collections.abc import AsyncGenerator, Callable

__all__ = ["Admission", "MemoryPool", "QueueFull", "ShuttingDown"]


class QueueFull(Exception):
    """Every slot is busy and the queue is full; ``retry_after`` estimates when to retry."""

    def __init__(self, retry_after: float, slots: int, queue_size: int) -> None:
        super().__init__(
            f"server busy: {slots} job(s) running and {queue_size} waiting, the most it "
            f"accepts; retry in about {retry_after:.0f} s or use another replica"
        )
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server is draining and admits no more jobs."""

    def __init__(self) -> None:
        super().__init__("server is shutting down; retry on another replica")


class MemoryPool:
    """Bytes of memory the running jobs of every tier hold, out of ``budget``. A job must fit
    the budget alone (the service refuses one that cannot before it queues); a job that does
    not fit beside the running ones waits.

    The pool also orders the queues that share it: while the head of one waits for memory
    alone (a slot free), no other queue's job takes memory, so that a stream of small instant
    jobs cannot keep a big job out for ever. Of several such heads, the one that began waiting
    first goes first, so that they never hold each other back."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._freed: list[Callable[[], None]] = []
        # The queues whose head waits for memory alone, with when it began: a ticket.
        self._heads: dict[object, int] = {}
        self._tickets = itertools.count()

    def fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.budget

    def take(self, nbytes: int) -> None:
        self.used += nbytes

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        self._grant_all()

    def on_free(self, grant: Callable[[], None]) -> None:
        """``grant`` runs whenever memory is given back, or a queue no longer holds the
        others back (an Admission grants its waiters)."""
        self._freed.append(grant)

    def ahead(self, queue: object) -> bool:
        """Whether another queue's head has waited for memory since before ``queue``'s."""
        mine = self._heads.get(queue, math.inf)
        return any(ticket < mine for other, ticket in self._heads.items() if other is not queue)

    def hold_back(self, queue: object) -> None:
        """``queue``'s head waits for memory alone: the others take none until it has it."""
        self._heads.setdefault(queue, next(self._tickets))

    def let_go(self, queue: object) -> None:
        """``queue``'s head no longer waits for memory: the others may take it again."""
        if self._heads.pop(queue, None) is not None:
            self._grant_all()

    def _grant_all(self) -> None:
        for grant in self._freed:
            grant()


class _Waiter:
    __slots__ = ("changed", "granted", "nbytes", "rejected")

    def __init__(self, nbytes: int) -> None:
        self.changed = asyncio.Event()
        self.granted = False
        self.rejected = False
        self.nbytes = nbytes


class Admission:
    """``slots`` jobs run at once, their predicted peaks within ``memory`` (None: memory is not
    counted); up to ``queue_size`` more wait in arrival order.

    ``on_change(queued, running)`` is called whenever either number changes (metrics).
    """

    def __init__(
        self,
        slots: int,
        queue_size: int,
        on_change: Callable[[int, int], None] = lambda queued, running: None,
        memory: MemoryPool | None = None,
    ) -> None:
        self.slots = slots
        self.queue_size = queue_size
        self.running = 0
        self._memory = memory
        if memory is not None:
            memory.on_free(self._grant_waiting)
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._on_change = on_change
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Recent job length, for the retry hint: a guess until ``expect`` gives an estimate,
        # replaced by the first job that finishes and then following the recent ones.
        self._job_seconds = 10.0
        self._measured = False

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def wait(self, nbytes: int = 0) -> AsyncGenerator[int, None]:
        """Yields this caller's queue position (0: next), again each time it changes, and
        returns once a slot and ``nbytes`` of the memory pool are held; the caller must then
        ``release`` them exactly once, with the same ``nbytes``.

        Raises QueueFull or ShuttingDown instead of queueing. Use with
        ``contextlib.aclosing`` so that a caller cancelled while waiting leaves the queue.
        """
        if self._closed:
            raise ShuttingDown
        waiter = _Waiter(nbytes)
        if self._room(waiter) and not self._waiters:
            self._take(waiter)
            waiter.granted = True
        elif len(self._waiters) >= self.queue_size:
            raise QueueFull(self.retry_after(), self.slots, self.queue_size)
        else:
            self._waiters.append(waiter)
            self._grant_waiting()  # a new head may wait for memory alone: the pool learns it
        self._changed()
        handed_over = False
        try:
            last = -1
            while True:
                waiter.changed.clear()
                if waiter.rejected:
                    raise ShuttingDown
                position = self._waiters.index(waiter) if not waiter.granted else 0
                if position != last:
                    last = position
                    yield position
                if waiter.granted:
                    break
                await waiter.changed.wait()
            handed_over = True
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                # The head leaving may let the next one in (it may need less memory).
                self._grant_waiting()
                self._notify_waiters()
                self._changed()
            elif waiter.granted and not handed_over:
                # Cancelled while holding a slot it never used: pass the slot on.
                self.release(nbytes=nbytes)

    def expect(self, job_seconds: float) -> None:
        """Seeds the retry hint with a measured estimate of a job's length (the warm-up's),
        until real jobs have finished."""
        self._job_seconds = job_seconds

    def release(self, job_seconds: float | None = None, *, nbytes: int = 0) -> None:
        """Frees a slot and the ``nbytes`` its job held (handing them straight to the
        longest waiters that fit); ``job_seconds`` is how long the job ran, which tunes the
        retry hint."""
        if job_seconds is not None:
            blended = 0.8 * self._job_seconds + 0.2 * job_seconds
            self._job_seconds = blended if self._measured else job_seconds
            self._measured = True
        self.running -= 1
        if self._memory is not None and nbytes:
            self._memory.give_back(nbytes)  # grants this admission's waiters too
        else:
            self._grant_waiting()
        self._changed()

    def _room(self, waiter: _Waiter) -> bool:
        memory = self._memory
        if self.running >= self.slots:
            return False
        return memory is None or (memory.fits(waiter.nbytes) and not memory.ahead(self))

    def _grant_waiting(self) -> None:
        """Grants slots to the longest waiters while the first of them fits: in arrival
        order, so that a job waiting for memory is not overtaken by smaller ones (of this
        queue, or, through the pool, of another)."""
        granted = False
        while self._waiters and not self._closed and self._room(self._waiters[0]):
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._take(waiter)
            waiter.changed.set()
            granted = True
        if granted:
            self._notify_waiters()
            self._changed()
        memory = self._memory
        if memory is not None:
            head = self._waiters[0] if self._waiters and not self._closed else None
            if head is not None and self.running < self.slots and not memory.fits(head.nbytes):
                memory.hold_back(self)
            else:
                memory.let_go(self)

    def retry_after(self) -> float:
        """Seconds until a queue place is likely free: the queue's share of recent job time."""
        return max(1.0, math.ceil(self._job_seconds * (len(self._waiters) + 1) / self.slots))

    def close(self) -> None:
        """Admits nothing more and turns every waiting caller away with ShuttingDown."""
        self._closed = True
        for waiter in self._waiters:
            waiter.rejected = True
            waiter.changed.set()
        if self._memory is not None:
            self._memory.let_go(self)

    async def idle(self) -> None:
        """Returns when no job holds a slot."""
        await self._idle.wait()

    def _take(self, waiter: _Waiter) -> None:
        self.running += 1
        if self._memory is not None:
            self._memory.take(waiter.nbytes)
        self._idle.clear()

    def _notify_waiters(self) -> None:
        for waiter in self._waiters:
            waiter.changed.set()

    def _changed(self) -> None:
        if self.running == 0:
            self._idle.set()
        self._on_change(len(self._waiters), self.running)
