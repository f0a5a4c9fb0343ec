"""Typed events of a style-transfer stream, converted from the protocol in one place.

Callers match on ``Queued`` / ``Started`` / ``Progress`` / ``Preview`` / ``Result`` instead of
poking at ``oneof`` fields, and the result's effective options come back as the same
``StyleOptions`` the caller used to ask.
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from styleserve.convert import effective_options
from styleserve.errors import Internal
from styleserve.options import StyleOptions
from styleserve.pictures import save_encoded
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = [
    "Event",
    "FeedForwardInfo",
    "Losses",
    "PrecisionChoice",
    "PrecisionTrial",
    "Preview",
    "Progress",
    "Queued",
    "Receipt",
    "Result",
    "Started",
    "Timings",
    "event_from_proto",
    "missing_result",
    "provenance",
]


@dataclass(frozen=True)
class Losses:
    """Weighted loss terms."""

    total: float
    content: float
    style: float
    tv: float

    @classmethod
    def from_proto(cls, message: pb.Losses) -> Losses:
        return cls(message.total, message.content, message.style, message.tv)


class _EncodedPicture:
    """Shared by events that carry an encoded picture in ``data``."""

    data: bytes

    def image(self) -> Image.Image:
        """The picture decoded with PIL."""
        picture = Image.open(io.BytesIO(self.data))
        picture.load()
        return picture

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the encoded bytes, as the server sent them, atomically to ``path``; ValueError
        where its suffix names another format than the picture's."""
        return save_encoded(path, self.data)


@dataclass(frozen=True)
class Queued:
    """The job waits for a slot; ``position`` jobs are ahead of it (0: next)."""

    position: int
    sequence: int = 0


@dataclass(frozen=True)
class Started:
    """The job got a slot. A detachable job (``detachable=True``) has a ``job_id`` to watch it
    by (``Client.watch_job``) and, from a server told its own address, the ``replica`` that
    runs it; both are "" otherwise."""

    queue_seconds: float
    device: str
    total_iterations: int
    job_id: str = ""
    replica: str = ""
    sequence: int = 0


@dataclass(frozen=True)
class Progress:
    """One optimiser iteration finished (1-based ``iteration`` over all stages)."""

    iteration: int
    total_iterations: int
    losses: Losses
    elapsed_seconds: float
    eta_seconds: float
    stage: int
    width: int
    height: int
    sequence: int = 0


@dataclass(frozen=True)
class Preview(_EncodedPicture):
    """An intermediate picture after ``iteration`` iterations."""

    iteration: int
    data: bytes
    sequence: int = 0


@dataclass(frozen=True)
class PrecisionTrial:
    """One precision's loss+gradient time at the server's warm-up, and how far its objective
    is from float32's (relative)."""

    precision: str
    seconds: float
    deviation: float


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a job ran in and why: the measurements behind ``auto``, or "requested"."""

    precision: str
    reason: str
    trials: tuple[PrecisionTrial, ...]

    @classmethod
    def from_proto(cls, message: pb.PrecisionChoice) -> PrecisionChoice:
        trials = tuple(PrecisionTrial(**_fields(t, PrecisionTrial)) for t in message.trials)
        return cls(message.precision, message.reason, trials)


@dataclass(frozen=True)
class FeedForwardInfo:
    """The feed-forward networks of a server's instant tier and where they run."""

    name: str
    sha256: str
    execution_provider: str

    @classmethod
    def from_proto(cls, message: pb.FeedForwardInfo) -> FeedForwardInfo:
        return cls(**_fields(message, cls))


def provenance(message: pb.Receipt | pb.GetServerInfoResponse) -> dict[str, Any]:
    """The precision choice and feed-forward networks a receipt or a server info names (None
    where it names none), as ``precision_choice`` and ``feed_forward``."""
    return {
        "precision_choice": PrecisionChoice.from_proto(message.precision_choice)
        if message.HasField("precision_choice")
        else None,
        "feed_forward": FeedForwardInfo.from_proto(message.feed_forward)
        if message.HasField("feed_forward")
        else None,
    }


@dataclass(frozen=True)
class Receipt:
    """Enough to reproduce a result. ``backbone`` is empty for a feed-forward picture, which
    ``feed_forward`` names the networks of (also when they seeded an optimisation)."""

    seed: int
    backbone: str
    weights_sha256: str
    device: str
    precision: str
    server_version: str
    torch_version: str
    request_id: str
    precision_choice: PrecisionChoice | None
    feed_forward: FeedForwardInfo | None

    @classmethod
    def from_proto(cls, message: pb.Receipt) -> Receipt:
        plain = {
            f.name: getattr(message, f.name)
            for f in dataclasses.fields(cls)
            if f.name not in ("precision_choice", "feed_forward")
        }
        return cls(**plain, **provenance(message))


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of the job."""

    queue_seconds: float
    setup_seconds: float
    optimize_seconds: float
    total_seconds: float


@dataclass(frozen=True)
class Result(_EncodedPicture):
    """The stylised picture (encoded as requested) and how it was made. ``partial``: the job
    ran out of time (``stop_reason`` "time_budget" or "deadline"; otherwise "completed", or ""
    from a server that does not say) and this is its best picture so far. ``sha256`` is the
    SHA-256 digest of ``data`` the server sent, which the client checked ("" from a server
    too old to send one)."""

    data: bytes
    width: int
    height: int
    iterations: int
    losses: Losses
    timings: Timings
    options: StyleOptions
    receipt: Receipt
    partial: bool = False
    stop_reason: str = ""
    sha256: str = ""
    sequence: int = 0


# A job's events. Each one's ``sequence`` is its number in the job (1, 2, 3, ...; a detachable
# job's watch resumes after one: ``watch_job(job_id, after_sequence=event.sequence)``), 0 from
# a server that does not number them.
Event = Queued | Started | Progress | Preview | Result


def _fields(message: Any, cls: type) -> dict[str, Any]:
    """The proto fields named like the dataclass ``cls``'s fields (an event's ``sequence``
    is its response's, not its message's)."""
    return {
        f.name: getattr(message, f.name) for f in dataclasses.fields(cls) if f.name != "sequence"
    }


def _stop_reason(number: int) -> str:
    """``STOP_REASON_TIME_BUDGET`` as "time_budget"; "" for unspecified or newer reasons."""
    value = pb.StopReason.DESCRIPTOR.values_by_number.get(number)
    if value is None or value.number == 0:
        return ""
    return str(value.name).removeprefix("STOP_REASON_").lower()


def event_from_proto(response: pb.StyleTransferResponse) -> Event | None:
    """The typed event in one streamed response; None for a kind of event newer than this
    client, which callers skip so that servers can add events without breaking old clients."""
    kind = response.WhichOneof("event")
    sequence = response.sequence
    if kind == "queued":
        return Queued(response.queued.position, sequence)
    if kind == "started":
        return Started(**_fields(response.started, Started), sequence=sequence)
    if kind == "progress":
        p = response.progress
        fields = {**_fields(p, Progress), "losses": Losses.from_proto(p.losses)}
        return Progress(**fields, sequence=sequence)
    if kind == "preview":
        return Preview(response.preview.iteration, response.preview.image.data, sequence)
    if kind == "result":
        r = response.result
        return Result(
            data=r.image.data,
            width=r.width,
            height=r.height,
            iterations=r.iterations,
            losses=Losses.from_proto(r.losses),
            timings=Timings(**_fields(r.timings, Timings)),
            options=effective_options(r.effective_options),
            receipt=Receipt.from_proto(r.receipt),
            partial=r.partial,
            stop_reason=_stop_reason(r.stop_reason),
            sha256=r.image_sha256,
            sequence=sequence,
        )
    return None


def missing_result() -> Internal:
    """The error for a stream that ended successfully but without a result."""
    return Internal("the server ended the stream without a result; check the server's log")
