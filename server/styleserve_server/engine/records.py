"""The records a job yields, the engine's whole vocabulary towards the service.

They are plain frozen dataclasses of Python values and PIL pictures, so that the gRPC layer
can translate them without knowing anything about torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from PIL import Image

from styleserve_server.engine.precision import PrecisionChoice

__all__ = [
    "FrameDone",
    "Finished",
    "Iterate",
    "JobCancelled",
    "Losses",
    "StopAt",
    "VideoDone",
    "stop_if_cancelled",
]


@dataclass(frozen=True)
class Losses:
    """The weighted terms of the objective; ``total`` is their sum."""

    total: float
    content: float
    style: float
    tv: float
    # A video frame's term holding it to the previous one (``engine.temporal``); 0 otherwise.
    temporal: float = 0.0


@dataclass(frozen=True)
class Iterate:
    """One optimiser iteration; ``iteration`` is 1-based over all coarse-to-fine stages."""

    iteration: int
    total: int
    stage: int
    width: int
    height: int
    losses: Losses
    elapsed: float
    preview: Image.Image | None


@dataclass(frozen=True)
class Finished:
    """The last record of a successful job."""

    image: Image.Image
    losses: Losses
    iterations: int
    seed: int
    # ``precision_choice.precision``, and why it was chosen.
    precision: str
    precision_choice: PrecisionChoice
    device: str
    setup_seconds: float
    optimize_seconds: float
    # True when the job ran out of time (its StopAt) before its last iteration: the picture and
    # losses are then its best iterate's, ``iterations`` the ones it ran.
    partial: bool = False
    # "completed", or the reason of the StopAt that stopped it.
    stop_reason: str = "completed"


@dataclass(frozen=True)
class FrameDone:
    """One stylised frame of a video (``engine.video``), in order."""

    index: int
    image: Image.Image
    # Its final losses (zero for the instant tier, which computes none).
    losses: Losses
    iterations: int
    # The share of its pixels that kept the previous frame (0 for the first, or on its own).
    consistent_fraction: float


@dataclass(frozen=True)
class VideoDone:
    """The last record of a successful video: what its receipt and timings report."""

    frames: int
    width: int
    height: int
    seed: int
    # The optimisation's precision and why (None for the instant tier).
    precision_choice: PrecisionChoice | None
    setup_seconds: float
    work_seconds: float


@dataclass(frozen=True)
class StopAt:
    """When a job must be done, as a ``time.perf_counter()`` instant, and why: "time_budget"
    or "deadline" (what Finished.stop_reason then says)."""

    at: float
    reason: str


class JobCancelled(Exception):
    """The caller set the job's cancel event; the job stopped and released its tensors."""


def stop_if_cancelled(cancel: threading.Event | None, what: str = "job") -> None:
    """The check every long loop of the engine makes between its steps (an evaluation, a
    tile, a frame, a style's resolution), so that a cancelled call stops its work within one
    step rather than at its end: raises JobCancelled when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise JobCancelled(f"the {what} was cancelled")
