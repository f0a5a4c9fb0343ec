"""Time bounds on a streaming caller: one that stops sending, or stops reading, is let go.

A StylizeVideo call holds a job slot and its memory while it waits for the caller's next frame,
and an UploadPicture call holds the room its header reserved in the store until its last byte;
a caller that stops reading a StylizeVideo call's answers stops it too (the server reads a frame
only when one is answered). Nothing else would end such a call before its deadline or its
connection's age and grace, which may be an hour: any caller could hold the server's slots and
store that long. So every wait on the caller is bounded by ``Limits.stream_idle_seconds``, and a
call whose caller stays silent (or deaf) that long ends DEADLINE_EXCEEDED, freeing what it held.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

__all__ = ["CallerIdle", "paced", "paced_write"]

T = TypeVar("T")


class CallerIdle(Exception):
    """The caller of a streaming call sent (or read) nothing for ``stream_idle_seconds``."""

    def __init__(self, seconds: int, waited_for: str) -> None:
        super().__init__(
            f"the server waited {seconds} s (limits.stream_idle_seconds) for {waited_for} and "
            "ended the call; nothing of it was kept: send it again without such pauses"
        )


async def paced(stream: AsyncIterator[T], seconds: int) -> AsyncIterator[T]:
    """``stream``'s messages, raising CallerIdle when the next takes over ``seconds`` to come;
    touches ``stream`` only once read (see ``wire.parse_each``)."""
    while True:
        try:
            message = await asyncio.wait_for(anext(stream, None), seconds)
        except asyncio.TimeoutError:
            raise CallerIdle(seconds, "this call's next message") from None
        if message is None:
            return
        yield message


def paced_write(
    write: Callable[[T], Awaitable[None]], seconds: int
) -> Callable[[T], Awaitable[None]]:
    """``write``, raising CallerIdle when the caller reads nothing for ``seconds`` (gRPC's flow
    control then holds the write back)."""

    async def bounded(message: T) -> None:
        try:
            await asyncio.wait_for(write(message), seconds)
        except asyncio.TimeoutError:
            raise CallerIdle(seconds, "the caller to read this call's answers") from None

    return bounded
