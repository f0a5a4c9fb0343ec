"""The asyncio client: the same surface as ``styleserve.Client`` for code on an event loop.

A backend that serves many users from one event loop follows many jobs at once without a
thread per job. Requests, events, errors and re-registering styles come from
``styleserve.calls``, as for the sync client; only the loops and awaits are this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Awaitable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import grpc.aio

from styleserve.batch import Outcome, batch_concurrency, run_batch_async
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
    AsyncVideoCall,
    VideoEvent,
    clip_frames,
    run_video_async,
    video_chunks,
    video_job,
    video_method,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from styleserve.options import JobOptions

__all__ = ["AsyncClient"]


class AsyncClient(Calls):
    """Like ``Client``, with ``await client.stylize(...)``, ``async for event in
    client.stream(...)`` (and ``stylize_many``, ``stylize_video``, ``watch_job``),
    ``await client.register_style(...)``, ``await client.upload_picture(...)``,
    ``await client.info()`` and ``async with`` / ``await close()``. Create it inside the
    event loop that uses it."""

    _grpc = grpc.aio

    async def stylize(
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
        """See ``Client.stylize``."""
        request = self._job_request(
            content, styles, init_image, request_id, style_id, options, regions, detachable
        )
        async with contextlib.aclosing(self._events(request, timeout)) as events:
            # Read on past the Result to the stream's end (see Client.stylize).
            results = [event async for event in events if isinstance(event, Result)]
        return final_result(results)

    async def stylize_many(
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
    ) -> AsyncGenerator[Outcome, None]:
        """See ``Client.stylize_many``: ``async for outcome in ...``. Close it with
        ``contextlib.aclosing`` so that leaving the loop early cancels the jobs in flight at
        once rather than when the generator is collected."""
        # Once, before any picture: a bad option stops the batch rather than failing each one.
        method = check_options(
            styles, style_id=style_id, init_image=init_image is not None, options=options
        ).method
        if concurrency is None:
            # Kept as ``_uploaded`` keeps it, which then need not ask again.
            self._server = server = await self.info(timeout=timeout)
            slots = server.limits.slots_for(method)
            # batch_concurrency may resolve the target's name (blocking): off the event loop.
            concurrency = await asyncio.to_thread(
                batch_concurrency, slots, self.target, self.load_balancing
            )

        def stylize(content: Picture, request_id: str) -> Awaitable[Result]:
            return self.stylize(
                content,
                styles,
                style_id=style_id,
                init_image=init_image,
                regions=regions,
                timeout=timeout,
                request_id=request_id,
                **options,
            )

        batch = run_batch_async(stylize, contents, concurrency)
        async with contextlib.aclosing(batch) as outcomes:
            async for outcome in outcomes:
                yield outcome

    async def stylize_video(
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
    ) -> AsyncGenerator[VideoEvent, None]:
        """See ``Client.stylize_video``: ``async for event in ...``, each chunk's call a task
        and the clip's frames read (a file's decoded) on a worker thread. Bad input raises
        ``VideoError`` at the first event, before any call. Close it with
        ``contextlib.aclosing`` so that leaving the loop early cancels every call in flight at
        once rather than when the generator is collected."""
        # Kept as ``_uploaded`` keeps it, which then need not ask again.
        self._server = server = await self.info(timeout=timeout)
        limits = server.limits
        frames, frame_count, rate = await asyncio.to_thread(clip_frames, video, fps, limits)
        job = await self._uploaded(
            video_job(styles, style_id, request_id, options, server), timeout
        )
        if concurrency is None:
            concurrency = await asyncio.to_thread(
                batch_concurrency,
                limits.slots_for(video_method(job)),
                self.target,
                self.load_balancing,
            )
        chunks = video_chunks(frame_count, limits, chunk_frames, overlap, concurrency)
        call = AsyncVideoCall(
            stub=self._stub,
            job=job,
            fps=rate,
            limits=limits,
            call_options=self._call_options(timeout),
            registration=self._registration_to_retry,
            register=lambda registration: self._register(registration.request, timeout),
            upload=lambda job: self._uploaded(job, timeout),
        )
        async with contextlib.aclosing(run_video_async(call, frames, chunks, concurrency)) as run:
            async for event in run:
                yield event

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
    ) -> AsyncGenerator[Event, None]:
        """See ``Client.stream``; leaving the ``async for`` early cancels the job (a
        ``detachable`` one runs on for the detach grace)."""
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
    ) -> AsyncGenerator[Event, None]:
        """See ``Client.watch_job``: ``async for event in ...``."""
        events, resumption = self._watch(job_id, after_sequence, replica, timeout)
        return self._watched(events, resumption)

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """See ``Client.get_job``."""
        with translated():
            operation = await self._operations.GetOperation(
                self._get_job_request(job_id), **self._call_options(timeout)
            )
        return JobStatus.from_operation(operation)

    async def list_jobs(self, *, timeout: float | None = None) -> list[JobStatus]:
        """See ``Client.list_jobs``."""
        jobs: list[JobStatus] = []
        token = ""
        while True:
            with translated():
                page = await self._operations.ListOperations(
                    list_request(token), **self._call_options(timeout)
                )
            token = add_page(jobs, page)
            if not token:
                return jobs

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> None:
        """See ``Client.cancel_job``."""
        with translated():
            await self._operations.CancelOperation(
                self._cancel_request(job_id), **self._call_options(timeout)
            )

    async def register_style(
        self, styles: Styles, *, timeout: float | None = None, **options: Unpack[JobOptions]
    ) -> str:
        """See ``Client.register_style``."""
        registration = self._registration(styles, options)
        return self._remember(registration, await self._register(registration.request, timeout))

    async def upload_picture(self, picture: Picture, *, timeout: float | None = None) -> str:
        """See ``Client.upload_picture``."""
        return await self._upload(encode_picture(picture), timeout)

    async def info(self, *, timeout: float | None = None) -> ServerInfo:
        """See ``Client.info``."""
        with translated():
            response = await self._stub.GetServerInfo(
                pb.GetServerInfoRequest(), **self._call_options(timeout)
            )
        return ServerInfo.from_proto(response)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """See ``Client.health``."""
        with translated():
            response = await self._health.Check(
                self._health_request(service), **self._call_options(timeout)
            )
        return self._health_status(response)

    async def close(self) -> None:
        self._closed = True
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

    async def _register(self, registration: pb.RegisterStyleRequest, timeout: float | None) -> str:
        registration = await self._uploaded(registration, timeout)
        with translated():
            response = await self._stub.RegisterStyle(registration, **self._call_options(timeout))
        return str(response.style_id)

    async def _upload(self, data: bytes, timeout: float | None) -> str:
        stream = upload_requests(data, chunk_bytes(self._server))
        with uploading(data):
            response = await self._stub.UploadPicture(stream, **self._call_options(timeout))
        return str(response.upload_id)

    async def _uploaded(self, message: Request, timeout: float | None) -> Request:
        """See ``Client._uploaded``."""
        if self._needs_server(message):
            self._server = await self.info(timeout=timeout)
        message, pictures = self._to_upload(message)
        for picture in pictures:
            picture.upload_id = await self._upload(picture.data, timeout)
            picture.ClearField("data")
        return message

    async def _events(
        self, request: pb.StyleTransferRequest, timeout: float | None
    ) -> AsyncGenerator[Event, None]:
        for attempt in JobEvents.ATTEMPTS:
            request = await self._uploaded(request, timeout)
            events = JobEvents()
            call = self._stub.StyleTransfer(request, **self._call_options(timeout))
            try:
                with translated():
                    async for response in call:
                        event = events.event(response)
                        if event is not None:
                            yield event
                return
            except NotFound as error:
                registration = self._registration_to_retry(request, error, events, attempt)
                await self._register(registration.request, timeout)
                request = with_pictures(request, registration)
            except Unavailable as error:
                resumption = self._resumption(request, events, error, timeout)
                break
            finally:
                # See Client._events: stops the job on the server when the caller left early.
                call.cancel()
        # Closed with this generator, so that leaving early stops the watch at once.
        async with contextlib.aclosing(self._watched(events, resumption)) as watched:
            async for event in watched:
                yield event

    async def _watched(
        self, events: JobEvents, resumption: Resumption
    ) -> AsyncGenerator[Event, None]:
        """See ``Client._watched``."""
        replica = self._replica_channel(resumption.replica)
        try:
            for attempt in resumption.attempts(self._watch_stubs(replica)):
                await asyncio.sleep(attempt.delay)
                call, job_event = self._reattach(attempt)
                try:
                    with watching(resumption):
                        async for response in call:
                            event = events.event(job_event(response))
                            if event is not None:
                                yield event
                        return
                finally:
                    call.cancel()
                if resumption.moved(attempt):
                    break
        finally:
            if replica is not None:
                await replica.close()
        async with contextlib.aclosing(self._watched(events, resumption)) as watched:
            async for event in watched:
                yield event
