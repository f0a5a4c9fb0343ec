"""The asyncio client: the same surface as ``styleserve.Client`` for code on an event loop.

A backend that serves many users from one event loop follows many jobs at once without a
thread per job; requests, events and errors are built by the same modules as the sync client's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from styleserve.channel import Connection
from styleserve.errors import from_rpc_error
from styleserve.events import Event, Result, event_from_proto, missing_result
from styleserve.info import ServerInfo
from styleserve.pictures import Picture
from styleserve.request import Styles
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["AsyncClient"]


class AsyncClient(Connection):
    """Like ``Client``, with ``await client.stylize(...)``, ``async for event in
    client.stream(...)``, ``await client.info()`` and ``async with`` / ``await close()``.
    Create it inside the event loop that uses it."""

    _grpc = grpc.aio

    async def stylize(
        self,
        content: Picture,
        styles: Styles,
        *,
        init_image: Picture | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        **options: Any,
    ) -> Result:
        """See ``Client.stylize``."""
        events = self.stream(
            content,
            styles,
            init_image=init_image,
            timeout=timeout,
            request_id=request_id,
            **options,
        )
        async with contextlib.aclosing(events):
            # Read on past the Result to the stream's end, so that the call ends OK on the
            # server instead of being cancelled in a race with its status.
            result = None
            async for event in events:
                if isinstance(event, Result):
                    result = event
        if result is None:
            raise missing_result()
        return result

    def stream(
        self,
        content: Picture,
        styles: Styles,
        *,
        init_image: Picture | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        **options: Any,
    ) -> AsyncGenerator[Event, None]:
        """See ``Client.stream``; leaving the ``async for`` early cancels the job."""
        return self._events(
            self._start_job(content, styles, init_image, request_id, timeout, options)
        )

    async def info(self, *, timeout: float | None = None) -> ServerInfo:
        """See ``Client.info``."""
        try:
            response = await self._stub.GetServerInfo(
                pb.GetServerInfoRequest(), **self._call_options(timeout)
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        return ServerInfo.from_proto(response)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @staticmethod
    async def _events(call: Any) -> AsyncGenerator[Event, None]:
        try:
            async for response in call:
                event = event_from_proto(response)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        finally:
            # See Client._events: stops the job on the server when the caller left early.
            call.cancel()
