"""Translates the engine's records into the stream's messages.

The engine speaks Python values and PIL pictures; this is the one place that knows how those
become StyleTransferResponse events, how pictures are encoded for the wire, and what a
receipt must hold for someone to reproduce a result.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image
from styleserve.convert import options_to_proto
from styleserve.options import StyleOptions
from styleserve.v1 import style_transfer_pb2 as pb

from styleserve_server.engine import Finished, Iterate, Losses

__all__ = ["Provenance", "encode", "preview", "progress", "queued", "result", "started"]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class Provenance:
    """What a receipt reports besides the job's own record."""

    backbone: str
    weights_sha256: str
    server_version: str
    torch_version: str
    request_id: str


def encode(image: Image.Image, options: StyleOptions) -> bytes:
    """``image`` in the requested output format and quality."""
    buffer = io.BytesIO()
    fmt = _PIL_FORMATS[options.output_format]
    if fmt == "PNG":
        image.save(buffer, fmt)
    else:
        image.save(buffer, fmt, quality=options.output_quality)
    return buffer.getvalue()


def _losses(losses: Losses) -> pb.Losses:
    return pb.Losses(total=losses.total, content=losses.content, style=losses.style, tv=losses.tv)


def queued(position: int) -> pb.StyleTransferResponse:
    return pb.StyleTransferResponse(queued=pb.Queued(position=position))


def started(queue_seconds: float, device: str, first: Iterate) -> pb.StyleTransferResponse:
    return pb.StyleTransferResponse(
        started=pb.Started(queue_seconds=queue_seconds, device=device, total_iterations=first.total)
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


def preview(record: Iterate, options: StyleOptions) -> pb.StyleTransferResponse:
    """The preview ``record`` carries, encoded (CPU work: call it off the event loop)."""
    assert record.preview is not None
    return pb.StyleTransferResponse(
        preview=pb.Preview(
            iteration=record.iteration, image=pb.Image(data=encode(record.preview, options))
        )
    )


def result(
    finished: Finished, options: StyleOptions, provenance: Provenance, queue_seconds: float
) -> pb.StyleTransferResponse:
    """The final event (encodes the picture: call it off the event loop)."""
    width, height = finished.image.size
    return pb.StyleTransferResponse(
        result=pb.Result(
            image=pb.Image(data=encode(finished.image, options)),
            width=width,
            height=height,
            losses=_losses(finished.losses),
            timings=pb.Timings(
                queue_seconds=queue_seconds,
                setup_seconds=finished.setup_seconds,
                optimize_seconds=finished.optimize_seconds,
                total_seconds=queue_seconds + finished.setup_seconds + finished.optimize_seconds,
            ),
            effective_options=options_to_proto(
                options.replace(seed=finished.seed, precision=finished.precision)
            ),
            receipt=pb.Receipt(
                seed=finished.seed,
                backbone=provenance.backbone,
                weights_sha256=provenance.weights_sha256,
                device=finished.device,
                precision=finished.precision,
                server_version=provenance.server_version,
                torch_version=provenance.torch_version,
                request_id=provenance.request_id,
            ),
            iterations=finished.iterations,
        )
    )
