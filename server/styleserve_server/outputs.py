"""Translates the engine's records into the stream's messages.

The engine speaks Python values and PIL pictures; this is the one place that knows how those
become StyleTransferResponse events, how pictures are encoded for the wire, how long that
takes (a job with a deadline must leave it the time), what a receipt must hold for someone
to reproduce a result, and how a result larger than the caller's largest message travels (in
chunks, the Result's digest checking what they assemble).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image
from styleserve.convert import options_to_proto
from styleserve.options import GRPC_DEFAULT_MESSAGE_BYTES, OptionsError, StyleOptions
from styleserve.plan import fit_longest_side
from styleserve.v1 import style_transfer_pb2 as pb

from styleserve_server.engine import (
    FeedForward,
    Finished,
    Iterate,
    Losses,
    PrecisionChoice,
    VideoDone,
)

__all__ = [
    "Numbering",
    "Provenance",
    "delivery_seconds",
    "delivered",
    "encode",
    "feed_forward_info",
    "instant_result",
    "message_bytes",
    "precision_choice",
    "preview",
    "progress",
    "queued",
    "result",
    "started",
    "video_frame",
    "video_result",
]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# Seconds per megapixel to turn the engine's last picture into the wire's: its encoding
# (measured on a 2-core AMD EPYC at 512 to 2048 px, the slowest of photographs, paintings and
# noise: PNG 0.40, WebP 0.18, JPEG 0.006) and the tensor-to-picture copy before it (0.026),
# doubled, because the cores are shared (instant jobs slow an optimisation 2.8x), and rounded up.
_ENCODE_SECONDS_PER_MEGAPIXEL = {"png": 0.9, "webp": 0.45, "jpeg": 0.07}
# What a result needs besides its encoding: the hops from the worker thread to the event loop
# and the wire, the wire itself, and the caller's clock, which started the deadline before the
# request reached the server.
_DELIVERY_SECONDS = 0.25
# The smallest DeliveryOptions.max_message_bytes asked for that a Result fits in once its picture
# travels apart (its options and receipt take a few KB).
_MIN_MESSAGE_BYTES = 64 * 1024
# What a result_chunk event takes beside its bytes (tags, lengths, the offset: about 30 bytes),
# with room to spare for whatever framing a proxy on the way counts.
_CHUNK_FRAMING = 1024
# The engine's stop reasons on the wire.
_STOP_REASONS = {
    "completed": pb.STOP_REASON_COMPLETED,
    "time_budget": pb.STOP_REASON_TIME_BUDGET,
    "deadline": pb.STOP_REASON_DEADLINE,
}


@dataclass(frozen=True)
class Provenance:
    """What a receipt reports besides the job's own record."""

    backbone: str
    weights_sha256: str
    server_version: str
    torch_version: str
    request_id: str
    # The server's instant tier, named in receipts of the pictures it made or seeded.
    feed_forward: FeedForward | None = None


def encode(image: Image.Image, options: StyleOptions) -> bytes:
    """``image`` in the requested output format and quality."""
    buffer = io.BytesIO()
    fmt = _PIL_FORMATS[options.output_format]
    if fmt == "PNG":
        image.save(buffer, fmt)
    else:
        image.save(buffer, fmt, quality=options.output_quality)
    return buffer.getvalue()


def message_bytes(asked: int) -> int:
    """The largest response a caller whose DeliveryOptions.max_message_bytes is ``asked``
    accepts. Raises OptionsError when it is too small for a Result."""
    if not asked:
        return GRPC_DEFAULT_MESSAGE_BYTES
    if asked < _MIN_MESSAGE_BYTES:
        raise OptionsError(
            "delivery.max_message_bytes",
            f"is {asked}: a Result needs at least {_MIN_MESSAGE_BYTES} bytes (0 takes gRPC's "
            f"default of {GRPC_DEFAULT_MESSAGE_BYTES})",
        )
    return asked


def delivered(
    response: pb.StyleTransferResponse, max_bytes: int
) -> Iterator[pb.StyleTransferResponse]:
    """The messages that carry the Result ``response`` within ``max_bytes`` each: itself when
    it fits, else its picture in result_chunk events, in order, and then the Result without
    it (whose image_sha256 and image_size_bytes check what they assemble)."""
    if response.ByteSize() <= max_bytes:
        yield response
        return
    data = response.result.image.data
    response.result.image.ClearField("data")
    step = max_bytes - _CHUNK_FRAMING
    for offset in range(0, len(data), step):
        chunk = pb.ImageChunk(offset=offset, data=data[offset : offset + step])
        yield pb.StyleTransferResponse(result_chunk=chunk)
    yield response


def _image(data: bytes) -> dict[str, Any]:
    """The Result's fields of its encoded picture ``data``."""
    return {
        "image": pb.Image(data=data),
        "image_sha256": hashlib.sha256(data).hexdigest(),
        "image_size_bytes": len(data),
    }


def delivery_seconds(size: tuple[int, int], options: StyleOptions) -> float:
    """How long before its deadline a job whose output is ``size`` (width, height) must hand
    over its last picture: to encode and send it, and the preview before it when it sends
    previews."""
    pixels = size[0] * size[1]
    if options.preview_every > 0:
        width, height = fit_longest_side(size, options.preview_size)
        pixels += width * height
    rate = _ENCODE_SECONDS_PER_MEGAPIXEL[options.output_format]
    return _DELIVERY_SECONDS + rate * pixels / 1e6


def feed_forward_info(feed_forward: FeedForward) -> pb.FeedForwardInfo:
    return pb.FeedForwardInfo(
        name=feed_forward.name,
        sha256=feed_forward.sha256,
        execution_provider=feed_forward.provider,
    )


def precision_choice(choice: PrecisionChoice) -> pb.PrecisionChoice:
    return pb.PrecisionChoice(
        precision=choice.precision,
        reason=choice.reason,
        trials=[
            pb.PrecisionTrial(precision=t.precision, seconds=t.seconds, deviation=t.deviation)
            for t in choice.trials
        ],
    )


def _losses(losses: Losses) -> pb.Losses:
    return pb.Losses(
        total=losses.total,
        content=losses.content,
        style=losses.style,
        tv=losses.tv,
        temporal=losses.temporal,
    )


class Numbering:
    """Numbers one job's events 1, 2, 3, ... (StyleTransferResponse.sequence), result chunks
    included: the one place that sets them, so that a job's own call and its watchers see the
    same numbers."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self, message: pb.StyleTransferResponse) -> pb.StyleTransferResponse:
        self.last += 1
        message.sequence = self.last
        return message


def queued(position: int) -> pb.StyleTransferResponse:
    return pb.StyleTransferResponse(queued=pb.Queued(position=position))


def started(
    queue_seconds: float, device: str, total: int, job_id: str = "", replica: str = ""
) -> pb.StyleTransferResponse:
    """``job_id`` and ``replica``: a detachable job's (job_store), else empty."""
    return pb.StyleTransferResponse(
        started=pb.Started(
            queue_seconds=queue_seconds,
            device=device,
            total_iterations=total,
            job_id=job_id,
            replica=replica,
        )
    )


def progress(record: Iterate, first: Iterate) -> pb.StyleTransferResponse:
    """Progress of ``record``; the time left is extrapolated from the iterations since
    ``first`` (the first one seen), which leaves the job's set-up out of the rate."""
    done = record.iteration - first.iteration
    if done > 0:
        per_iteration = (record.elapsed - first.elapsed) / done
    else:
        per_iteration = record.elapsed / record.iteration
    return pb.StyleTransferResponse(
        progress=pb.Progress(
            iteration=record.iteration,
            total_iterations=record.total,
            losses=_losses(record.losses),
            elapsed_seconds=record.elapsed,
            eta_seconds=per_iteration * (record.total - record.iteration),
            stage=record.stage,
            width=record.width,
            height=record.height,
        )
    )


def preview(iteration: int, image: Image.Image, options: StyleOptions) -> pb.StyleTransferResponse:
    """The preview of ``iteration`` (0: the feed-forward picture), encoded (CPU work: call it
    off the event loop)."""
    return pb.StyleTransferResponse(
        preview=pb.Preview(iteration=iteration, image=pb.Image(data=encode(image, options)))
    )


def _receipt(
    provenance: Provenance,
    *,
    seed: int,
    device: str,
    precision: str,
    feed_forward: bool,
    choice: PrecisionChoice | None = None,
) -> pb.Receipt:
    return pb.Receipt(
        seed=seed,
        backbone=provenance.backbone,
        weights_sha256=provenance.weights_sha256,
        device=device,
        precision=precision,
        server_version=provenance.server_version,
        torch_version=provenance.torch_version,
        request_id=provenance.request_id,
        feed_forward=feed_forward_info(provenance.feed_forward)
        if feed_forward and provenance.feed_forward is not None
        else None,
        precision_choice=None if choice is None else precision_choice(choice),
    )


def _timings(queue: float, setup: float, work: float) -> pb.Timings:
    return pb.Timings(
        queue_seconds=queue,
        setup_seconds=setup,
        optimize_seconds=work,
        total_seconds=queue + setup + work,
    )


def result(
    finished: Finished, options: StyleOptions, provenance: Provenance, queue_seconds: float
) -> pb.StyleTransferResponse:
    """The final event (encodes the picture: call it off the event loop)."""
    width, height = finished.image.size
    return pb.StyleTransferResponse(
        result=pb.Result(
            **_image(encode(finished.image, options)),
            width=width,
            height=height,
            losses=_losses(finished.losses),
            timings=_timings(queue_seconds, finished.setup_seconds, finished.optimize_seconds),
            effective_options=options_to_proto(
                options.replace(seed=finished.seed, precision=finished.precision)
            ),
            receipt=_receipt(
                provenance,
                seed=finished.seed,
                device=finished.device,
                precision=finished.precision,
                feed_forward=options.init == "feed_forward",
                choice=finished.precision_choice,
            ),
            iterations=finished.iterations,
            partial=finished.partial,
            stop_reason=_STOP_REASONS[finished.stop_reason],
        )
    )


def instant_result(
    image: Image.Image,
    options: StyleOptions,
    provenance: Provenance,
    device: str,
    timings: tuple[float, float, float],
    stop_reason: str = "completed",
) -> pb.StyleTransferResponse:
    """The only picture of a feed-forward job (encodes it: call it off the event loop), or of
    an optimisation that had no time for any iteration (``stop_reason`` says why; partial).

    It has no losses (computing them would cost more than the picture) and names no VGG
    weights: the feed-forward networks in its receipt made it alone. ``timings`` are the
    queue, decoding and network seconds."""
    width, height = image.size
    return pb.StyleTransferResponse(
        result=pb.Result(
            **_image(encode(image, options)),
            width=width,
            height=height,
            losses=pb.Losses(),
            timings=_timings(*timings),
            effective_options=options_to_proto(options),
            receipt=_receipt(
                dataclasses.replace(provenance, backbone="", weights_sha256=""),
                seed=options.seed or 0,
                device=device,
                # onnxruntime runs the int8-trained networks dequantised, in float32.
                precision="float32",
                feed_forward=True,
            ),
            iterations=0,
            partial=stop_reason != "completed",
            stop_reason=_STOP_REASONS[stop_reason],
        )
    )


def video_frame(
    index: int, data: bytes, losses: Losses, consistent_fraction: float
) -> pb.StylizeVideoResponse:
    """A stylised frame, its picture encoded already (``data``)."""
    return pb.StylizeVideoResponse(
        frame=pb.VideoFrameResult(
            index=index,
            image=pb.Image(data=data),
            losses=_losses(losses),
            consistent_fraction=consistent_fraction,
        )
    )


def video_result(
    done: VideoDone,
    options: StyleOptions,
    provenance: Provenance,
    device: str,
    queue_seconds: float,
) -> pb.StylizeVideoResponse:
    """The end of a video: its frames' size, timings, effective options and receipt (the
    instant tier's names no VGG weights, as ``instant_result``'s)."""
    instant = options.method == "feed_forward"
    choice = done.precision_choice
    precision = "float32" if instant or choice is None else choice.precision
    if instant:
        provenance = dataclasses.replace(provenance, backbone="", weights_sha256="")
    return pb.StylizeVideoResponse(
        result=pb.VideoResult(
            frames=done.frames,
            width=done.width,
            height=done.height,
            timings=_timings(queue_seconds, done.setup_seconds, done.work_seconds),
            effective_options=options_to_proto(
                options.replace(seed=done.seed, precision=precision)
            ),
            receipt=_receipt(
                provenance,
                seed=done.seed,
                device=device,
                precision=precision,
                feed_forward=instant or options.init == "feed_forward",
                choice=None if instant else choice,
            ),
        )
    )
