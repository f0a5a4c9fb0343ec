"""Time bounds on a streaming caller: one that stops sending, or stops reading, is let go.

A StylizeVideo call holds a job slot and its memory while it waits for the caller's next frame,
and an UploadPicture call holds the room its header reserved in the store until its last byte;
a caller that stops reading a StylizeVideo call's answers stops it too (the server reads a frame
only when one is answered). Nothing else would end such a call before its deadline or its
connection's age and grace, which may be an hour: any caller could hold the server's slots and
store that long. So every wait on the caller is bounded by ``Limits.stream_idle_seconds``, and a
call whose caller stays silent (or deaf) that long ends DEADLINE_EXCEEDED, freeing what it held.
A wait counts only while the caller owes the server something: an upload owes its next chunk at
once, a video its next frame only once every frame it sent is answered (a caller may send one
frame at a time, and a frame may take the server minutes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

__all__ = ["CallerIdle", "paced", "paced_write", "within"]

T = TypeVar("T")


class CallerIdle(Exception):
    """The caller of a streaming call sent (or read) nothing for ``stream_idle_seconds`` while
    it owed the server a message (or a read)."""

    def __init__(self, seconds: int, waited_for: str) -> None:
        super().__init__(
            f"the server waited {seconds} s (limits.stream_idle_seconds) for {waited_for} and "
            "ended the call; nothing of it was kept: send it again without such pauses"
        )


async def within(step: Awaitable[T], seconds: float, waited_for: str) -> T:
    """``step`` (a wait on the caller), raising CallerIdle when it takes over ``seconds``."""
    try:
        return await asyncio.wait_for(step, seconds)
    except asyncio.TimeoutError:
        raise CallerIdle(round(seconds), waited_for) from None


async def paced(stream: AsyncIterator[T], seconds: int) -> AsyncIterator[T]:
    """``stream``'s messages, raising CallerIdle when the next takes over ``seconds`` to come
    (for a caller that owes the server its next message whenever the server asks for it: an
    upload's)."""
    while True:
        message = await within(anext(stream, None), seconds, "this call's next message")
        if message is None:
            return
        yield message


def paced_write(
    write: Callable[[T], Awaitable[None]], seconds: int
) -> Callable[[T], Awaitable[None]]:
    """``write``, raising CallerIdle when the caller reads nothing for ``seconds`` (gRPC's flow
    control then holds the write back)."""

    async def bounded(message: T) -> None:
        await within(write(message), seconds, "the caller to read this call's answers")

    return bounded
