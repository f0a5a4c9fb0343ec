"""The records a job yields, the engine's whole vocabulary towards the service.

They are plain frozen dataclasses of Python values and PIL pictures, so that the gRPC layer
can translate them without knowing anything about torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from styleserve_server.engine.precision import PrecisionChoice

__all__ = ["Finished", "Iterate", "JobCancelled", "Losses", "StopAt"]


@dataclass(frozen=True)
class Losses:
    """The weighted terms of the objective; ``total`` is their sum."""

    total: float
    content: float
    style: float
    tv: float


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
class StopAt:
    """When a job must be done, as a ``time.perf_counter()`` instant, and why: "time_budget"
    or "deadline" (what Finished.stop_reason then says)."""

    at: float
    reason: str


class JobCancelled(Exception):
    """The caller set the job's cancel event; the job stopped and released its tensors."""
