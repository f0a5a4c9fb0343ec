"""The blocking client: stylise pictures on a styleserve server and follow the job as it runs.

This is what backend code and the CLI call. It hides the protocol: pictures go in as paths,
bytes or PIL images, typed events and a ``Result`` come out, and failures are
``styleserve.errors`` exceptions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from types import TracebackType
from typing import Any

import grpc

from styleserve.channel import Connection
from styleserve.errors import from_rpc_error
from styleserve.events import Event, Result, event_from_proto, missing_result
from styleserve.info import ServerInfo
from styleserve.pictures import Picture
from styleserve.request import Styles
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["Client"]


class Client(Connection):
    """The blocking client; see ``Connection`` for the arguments (target, tls / credentials,
    token, timeout, load_balancing). Use as a context manager, or call ``close()``."""

    def stylize(
        self,
        content: Picture,
        styles: Styles,
        *,
        init_image: Picture | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        **options: Any,
    ) -> Result:
        """Stylise ``content`` in the style of ``styles`` and return the result.

        ``options`` are ``StyleOptions`` fields (``preset``, ``size``, ``iterations``,
        ``style_blend``, ``output_format``, ...); those left out take the preset's value."""
        events = self.stream(
            content,
            styles,
            init_image=init_image,
            timeout=timeout,
            request_id=request_id,
            **options,
        )
        with contextlib.closing(events):
            # Read on past the Result to the stream's end, so that the call ends OK on the
            # server instead of being cancelled in a race with its status.
            result = None
            for event in events:
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
    ) -> Generator[Event, None, None]:
        """Start a job and yield its events: ``Queued``..., ``Started``, ``Progress`` and
        ``Preview``..., then ``Result``. Leaving the loop early (``break``, an exception,
        ``close()``) cancels the job on the server."""
        return self._events(
            self._start_job(content, styles, init_image, request_id, timeout, options)
        )

    def info(self, *, timeout: float | None = None) -> ServerInfo:
        """The server's version, backbones, presets, device and limits."""
        try:
            response = self._stub.GetServerInfo(
                pb.GetServerInfoRequest(), **self._call_options(timeout)
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return ServerInfo.from_proto(response)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _events(call: Any) -> Generator[Event, None, None]:
        try:
            for response in call:
                event = event_from_proto(response)
                if event is not None:
                    yield event
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            # Only does something when the caller left early or an error (Ctrl-C included)
            # interrupted the loop: the server then stops the job and frees its slot.
            call.cancel()
