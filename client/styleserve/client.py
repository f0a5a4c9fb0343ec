"""The blocking client: stylise pictures on a styleserve server and follow the job as it runs.

This is what backend code and the CLI call. It hides the protocol: pictures go in as paths,
bytes or PIL images (uploaded first when a request cannot carry them), typed events and a
``Result`` come out (assembled from chunks when it is larger than a message, its digest
checked), and failures are ``styleserve.errors`` exceptions. Everything but the loops is shared
with the asyncio client (``styleserve.calls``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING

from styleserve.calls import Calls, JobEvents, final_result, translated
from styleserve.errors import NotFound
from styleserve.events import Event, Result
from styleserve.info import ServerInfo
from styleserve.pictures import Picture, encode_picture
from styleserve.regions import Regions
from styleserve.request import Styles, with_pictures
from styleserve.uploads import Request, chunk_bytes, upload_requests
from styleserve.v1 import style_transfer_pb2 as pb

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from styleserve.options import JobOptions

__all__ = ["Client"]


class Client(Calls):
    """The blocking client; see ``Connection`` for the arguments (target, TLS, token,
    timeout, load balancing, retries). Use as a context manager, or call ``close()``."""

    def stylize(
        self,
        content: Picture,
        styles: Styles | None = None,
        *,
        style_id: str | None = None,
        init_image: Picture | None = None,
        regions: Regions | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Result:
        """Stylise ``content`` in the style of ``styles`` (or of a ``style_id`` from
        ``register_style``) and return the result; with ``regions``, each style paints its
        own part of the picture.

        ``options`` are ``StyleOptions`` fields (``preset``, ``size``, ``iterations``,
        ``style_blend``, ``output_format``, ...); those left out take the preset's value.
        Pictures larger than the server takes in a request are uploaded first
        (``upload_picture``), and a result larger than a message comes in chunks; either
        way its digest is checked (``DataLoss`` when it does not match)."""
        request = self._job_request(
            content, styles, init_image, request_id, style_id, options, regions
        )
        with contextlib.closing(self._events(request, timeout)) as events:
            # Read on past the Result to the stream's end, so that the call ends OK on the
            # server instead of being cancelled in a race with its status.
            results = [event for event in events if isinstance(event, Result)]
        return final_result(results)

    def stream(
        self,
        content: Picture,
        styles: Styles | None = None,
        *,
        style_id: str | None = None,
        init_image: Picture | None = None,
        regions: Regions | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Generator[Event, None, None]:
        """Start a job and yield its events: ``Queued``..., ``Started``, ``Progress`` and
        ``Preview``..., then ``Result``. Leaving the loop early (``break``, an exception,
        ``close()``) cancels the job on the server."""
        request = self._job_request(
            content, styles, init_image, request_id, style_id, options, regions
        )
        return self._events(request, timeout)

    def register_style(
        self, styles: Styles, *, timeout: float | None = None, **options: Unpack[JobOptions]
    ) -> str:
        """Prepare ``styles`` on the server once for many jobs; returns the ``style_id`` that
        ``stylize`` and ``stream`` take instead of the pictures. The options that decide the
        style targets (backbone, style_layers, style_scale, resize, size, ...) apply to every
        job that names it. The client keeps the pictures and registers them again on a
        server that does not hold the style."""
        registration = self._registration(styles, options)
        return self._remember(registration, self._register(registration.request, timeout))

    def upload_picture(self, picture: Picture, *, timeout: float | None = None) -> str:
        """Store ``picture`` (a path, encoded bytes or a PIL image) on the server, sent in
        chunks whatever its size up to ``info().uploads.max_upload_bytes``, and return its
        upload id: ``UploadedPicture(upload_id)`` then stands for it wherever a picture goes,
        without sending it again, until the server lets it expire
        (``info().uploads.expire_seconds`` after its last use) or evicts it for newer uploads
        (``NotFound``: upload it again; the same bytes get the same id). ``stylize`` does this
        by itself for pictures too large for a request."""
        return self._upload(encode_picture(picture), timeout)

    def info(self, *, timeout: float | None = None) -> ServerInfo:
        """The server's version, backbones, presets, device, limits, style cache and upload
        store."""
        with translated():
            response = self._stub.GetServerInfo(
                pb.GetServerInfoRequest(), **self._call_options(timeout)
            )
        return ServerInfo.from_proto(response)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's grpc.health.v1 status for ``service`` ("": the whole server), e.g.
        "SERVING" or "NOT_SERVING"."""
        with translated():
            response = self._health.Check(
                self._health_request(service), **self._call_options(timeout)
            )
        return self._health_status(response)

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

    def _register(self, registration: pb.RegisterStyleRequest, timeout: float | None) -> str:
        registration = self._uploaded(registration, timeout)
        with translated():
            response = self._stub.RegisterStyle(registration, **self._call_options(timeout))
        return str(response.style_id)

    def _upload(self, data: bytes, timeout: float | None) -> str:
        stream = upload_requests(data, chunk_bytes(self._server))
        with translated():
            response = self._stub.UploadPicture(stream, **self._call_options(timeout))
        return str(response.upload_id)

    def _uploaded(self, message: Request, timeout: float | None) -> Request:
        """``message``, naming uploads instead of the pictures too large for it (uploaded now)."""
        if self._needs_server(message):
            self._server = self.info(timeout=timeout)
        message, pictures = self._to_upload(message)
        for picture in pictures:
            picture.upload_id = self._upload(picture.data, timeout)
            picture.ClearField("data")
        return message

    def _events(
        self, request: pb.StyleTransferRequest, timeout: float | None
    ) -> Generator[Event, None, None]:
        for attempt in JobEvents.ATTEMPTS:
            request = self._uploaded(request, timeout)
            events = JobEvents()
            call = self._stub.StyleTransfer(request, **self._call_options(timeout))
            try:
                with translated():
                    for response in call:
                        event = events.event(response)
                        if event is not None:
                            yield event
                return
            except NotFound as error:
                registration = self._registration_to_retry(request, error, events, attempt)
                self._register(registration.request, timeout)
                request = with_pictures(request, registration)
            finally:
                # Only does something when the caller left early or an error (Ctrl-C
                # included) interrupted the loop: the server then stops the job.
                call.cancel()
