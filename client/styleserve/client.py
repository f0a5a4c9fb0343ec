"""The blocking client: stylise pictures on a styleserve server and follow the job as it runs.

This is what backend code and the CLI call. It hides the protocol: pictures go in as paths,
bytes or PIL images (uploaded first when a request cannot carry them), typed events and a
``Result`` come out (assembled from chunks when it is larger than a message, its digest
checked), and failures are ``styleserve.errors`` exceptions. Everything but the loops is shared
with the asyncio client (``styleserve.calls``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from styleserve.batch import InFlight, Outcome, batch_concurrency, run_batch
from styleserve.calls import Calls, JobEvents, final_result, translated, uploading, watching
from styleserve.errors import NotFound, Unavailable
from styleserve.events import Event, Result
from styleserve.info import ServerInfo
from styleserve.jobs import JobStatus, add_page, list_request
from styleserve.pictures import Picture, encode_picture
from styleserve.regions import Regions
from styleserve.request import Styles, check_options, with_pictures
from styleserve.resume import Resumption
from styleserve.uploads import Request, chunk_bytes, upload_requests
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.video import VideoClip
from styleserve.video_jobs import (
    DEFAULT_OVERLAP,
    VideoCall,
    VideoEvent,
    clip_frames,
    run_video,
    video_chunks,
    video_job,
    video_method,
)

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
        detachable: bool = False,
        **options: Unpack[JobOptions],
    ) -> Result:
        """Stylise ``content`` in the style of ``styles`` (or of a ``style_id`` from
        ``register_style``) and return the result; with ``regions``, each style paints its
        own part of the picture.

        ``options`` are ``StyleOptions`` fields (``preset``, ``size``, ``iterations``,
        ``style_blend``, ``output_format``, ...); those left out take the preset's value.
        Pictures larger than the server takes in a request are uploaded first
        (``upload_picture``), and a result larger than a message comes in chunks; either
        way its digest is checked (``DataLoss`` when it does not match).

        A ``detachable`` job outlives a dropped connection: the client reattaches to it by
        itself (``watch_job``), on the replica that runs it, and carries on where it was."""
        request = self._job_request(
            content, styles, init_image, request_id, style_id, options, regions, detachable
        )
        return self._result(request, timeout)

    def stylize_many(
        self,
        contents: Iterable[Picture],
        styles: Styles | None = None,
        *,
        style_id: str | None = None,
        init_image: Picture | None = None,
        regions: Regions | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        **options: Unpack[JobOptions],
    ) -> Generator[Outcome, None, None]:
        """Stylise every picture of ``contents`` (any iterable, read as room opens) as
        ``stylize`` would, ``concurrency`` jobs at a time, and yield an ``Outcome`` per picture
        as it finishes: its ``result``, or the ``error`` that failed it (a picture the server
        refused, a file that cannot be read), which does not stop the others. Options or
        styles that no picture could go with raise InvalidArgument first, before any call.

        ``concurrency`` defaults to the job's tier's slots times the replicas that take this
        client's calls (``styleserve.batch.batch_concurrency``; one ``info()`` call). Leaving
        the loop early (``break``, an exception, Ctrl-C) cancels the jobs in flight. ``timeout``
        is each job's deadline."""
        # Once, before any picture: a bad option stops the batch rather than failing each one.
        method = check_options(
            styles, style_id=style_id, init_image=init_image is not None, options=options
        ).method
        if concurrency is None:
            # Kept as ``_uploaded`` keeps it, which then need not ask again.
            self._server = server = self.info(timeout=timeout)
            slots = server.limits.slots_for(method)
            concurrency = batch_concurrency(slots, self.target, self.load_balancing)
        in_flight = InFlight()

        def stylize(content: Picture, request_id: str) -> Result:
            request = self._job_request(
                content, styles, init_image, request_id, style_id, options, regions
            )
            return self._result(request, timeout, in_flight)

        return run_batch(stylize, contents, concurrency, in_flight)

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
        detachable: bool = False,
        **options: Unpack[JobOptions],
    ) -> Generator[Event, None, None]:
        """Start a job and yield its events: ``Queued``..., ``Started``, ``Progress`` and
        ``Preview``..., then ``Result``. Leaving the loop early (``break``, an exception,
        ``close()``) cancels the job on the server, unless it is ``detachable``: that job's
        ``Started`` has its ``job_id``, it runs on while nobody watches for the server's
        detach grace (``cancel_job`` stops it), and a dropped connection is reattached by
        itself: every event still comes once, in order (see ``stylize``)."""
        request = self._job_request(
            content, styles, init_image, request_id, style_id, options, regions, detachable
        )
        return self._events(request, timeout)

    def watch_job(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        replica: str = "",
        timeout: float | None = None,
    ) -> Generator[Event, None, None]:
        """Follow a running or finished detachable job by its ``Started.job_id`` (from any
        process of the same caller): yield the events the server kept after the
        ``after_sequence``-th (0: all it kept; the newest Preview only), then the rest as they
        come, up to the ``Result``, reattaching as ``stream`` does (on ``replica``, the
        ``Started.replica``, first). ``NotFound``: the server does not hold the job (unknown,
        expired, or another caller's). Leaving the loop stops watching, not the job."""
        events, resumption = self._watch(job_id, after_sequence, replica, timeout)
        return self._watched(events, resumption)

    def get_job(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """How the detachable job ``job_id`` (``Started.job_id``) is doing, without following
        it: running with its newest Progress, or how it ended (its Result without the
        picture, which ``watch_job`` brings; or its error). ``NotFound``: the server does not
        hold it (unknown, expired, or another caller's)."""
        with translated():
            operation = self._operations.GetOperation(
                self._get_job_request(job_id), **self._call_options(timeout)
            )
        return JobStatus.from_operation(operation)

    def list_jobs(self, *, timeout: float | None = None) -> list[JobStatus]:
        """Every detachable job of this caller that the server keeps, oldest first (each
        page a call, ``timeout`` each)."""
        jobs: list[JobStatus] = []
        token = ""
        while True:
            with translated():
                page = self._operations.ListOperations(
                    list_request(token), **self._call_options(timeout)
                )
            token = add_page(jobs, page)
            if not token:
                return jobs

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> None:
        """Stop the running detachable job ``job_id`` (its slot frees at once; its followers
        get ``Cancelled``); a finished one stays as it ended. ``NotFound`` as for
        ``get_job``."""
        with translated():
            self._operations.CancelOperation(
                self._cancel_request(job_id), **self._call_options(timeout)
            )

    def stylize_video(
        self,
        video: str | os.PathLike[str] | VideoClip | Sequence[Picture],
        styles: Styles | None = None,
        *,
        fps: float | None = None,
        style_id: str | None = None,
        overlap: int = DEFAULT_OVERLAP,
        chunk_frames: int | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
        **options: Unpack[JobOptions],
    ) -> Generator[VideoEvent, None, None]:
        """Stylise a clip, each frame kept consistent with the one before it
        (``temporal_weight``), and yield ``VideoProgress`` events and every
        ``StylizedFrame`` once, in order, then the ``VideoResult``.

        ``video`` is a file (decoded with PyAV: ``pip install 'styleserve[video]'``), a clip
        from ``styleserve.video.open_video``, or pictures in order at ``fps``. It is cut into
        chunks of at most the server's ``max_video_frames`` (``chunk_frames`` for fewer),
        consecutive ones sharing ``overlap`` frames that are cross-faded at the join, and
        ``concurrency`` chunks run at once (default: the job's tier's slots times the replicas
        behind the target, as for ``stylize_many``). Bad input raises ``VideoError`` before
        any call; leaving the loop early, or a chunk failing, cancels every call in flight.
        ``options`` and ``timeout`` (each chunk's deadline) are as for ``stylize``."""
        # Kept as ``_uploaded`` keeps it, which then need not ask again.
        self._server = server = self.info(timeout=timeout)
        limits = server.limits
        frames, frame_count, rate = clip_frames(video, fps, limits)
        job = self._uploaded(video_job(styles, style_id, request_id, options, server), timeout)
        if concurrency is None:
            slots = limits.slots_for(video_method(job))
            concurrency = batch_concurrency(slots, self.target, self.load_balancing)
        chunks = video_chunks(frame_count, limits, chunk_frames, overlap, concurrency)
        call = VideoCall(
            stub=self._stub,
            job=job,
            fps=rate,
            limits=limits,
            call_options=self._call_options(timeout),
            registration=self._registration_to_retry,
            register=lambda registration: self._register(registration.request, timeout),
            upload=lambda job: self._uploaded(job, timeout),
            in_flight=InFlight(),
        )
        return run_video(call, frames, chunks, concurrency)

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
        self._closed = True
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

    def _result(
        self,
        request: pb.StyleTransferRequest,
        timeout: float | None,
        in_flight: InFlight | None = None,
    ) -> Result:
        with contextlib.closing(self._events(request, timeout, in_flight)) as events:
            # Read on past the Result to the stream's end, so that the call ends OK on the
            # server instead of being cancelled in a race with its status.
            results = [event for event in events if isinstance(event, Result)]
        return final_result(results)

    def _register(self, registration: pb.RegisterStyleRequest, timeout: float | None) -> str:
        registration = self._uploaded(registration, timeout)
        with translated():
            response = self._stub.RegisterStyle(registration, **self._call_options(timeout))
        return str(response.style_id)

    def _upload(self, data: bytes, timeout: float | None) -> str:
        stream = upload_requests(data, chunk_bytes(self._server))
        with uploading(data):
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
        self,
        request: pb.StyleTransferRequest,
        timeout: float | None,
        in_flight: InFlight | None = None,
    ) -> Generator[Event, None, None]:
        """The job's events; its calls are in ``in_flight`` while open, so that a batch can
        cancel them from another thread."""
        for attempt in JobEvents.ATTEMPTS:
            request = self._uploaded(request, timeout)
            events = JobEvents()
            call = self._stub.StyleTransfer(request, **self._call_options(timeout))
            if in_flight is not None:
                in_flight.add(call)
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
            except Unavailable as error:
                resumption = self._resumption(request, events, error, timeout)
                break
            finally:
                # Only does something when the caller left early or an error (Ctrl-C
                # included) interrupted the loop: the server then stops the job.
                call.cancel()
                if in_flight is not None:
                    in_flight.discard(call)
        # Out of the handler, so that a later failure does not chain the broken call's.
        yield from self._watched(events, resumption, in_flight)

    def _watched(
        self, events: JobEvents, resumption: Resumption, in_flight: InFlight | None = None
    ) -> Generator[Event, None, None]:
        """The job's events by WatchJob until its end (``styleserve.resume``)."""
        replica = self._replica_channel(resumption.replica)
        try:
            for attempt in resumption.attempts(self._watch_stubs(replica)):
                time.sleep(attempt.delay)
                call, job_event = self._reattach(attempt)
                if in_flight is not None:
                    in_flight.add(call)
                try:
                    with watching(resumption):
                        for response in call:
                            event = events.event(job_event(response))
                            if event is not None:
                                yield event
                        return
                finally:
                    # Stops watching when the caller left, not the job (a resent call alike:
                    # it follows the job as a watch does): cancel_job stops it, or the server
                    # after its detach grace with nobody watching.
                    call.cancel()
                    if in_flight is not None:
                        in_flight.discard(call)
                if resumption.moved(attempt):
                    break
        finally:
            if replica is not None:
                replica.close()
        yield from self._watched(events, resumption, in_flight)
