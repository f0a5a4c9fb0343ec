"""Temporal consistency of a video's frames: optical flow, warping, and where the flow holds.

Stylising frames one by one flickers: the optimisation lands in another local minimum on every
frame and the feed-forward network turns small changes of its input into large ones of its
output. Ruder et al. (2016, "Artistic style transfer for videos") carry the previous stylised
frame onto the current one along the optical flow between their *input* frames and keep it
wherever that flow is reliable: where the forward and backward flows agree (elsewhere the
pixel was hidden in the previous frame: a disocclusion) and away from motion boundaries. The
optimisation starts from the carried frame and adds a temporal term that holds the reliable
pixels to it (``TemporalTarget``); the instant tier blends it into its own picture
(``blend``). The flow is OpenCV's DIS (Kroeger et al. 2016), fast on a CPU, started from the
previous pair's flow where the motion goes on (``FlowTracker``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "TEMPORAL_SCALE",
    "Carried",
    "FlowTracker",
    "TemporalTarget",
    "blend",
    "optical_flow",
    "reliable",
    "temporal_target",
    "warp",
]

# DIS's "fast" preset: at 512 px a pair takes about 10 ms on one core, a small share of the
# instant tier's frame, and recovers the smooth motion of a camera as "medium" does.
_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST
# Ruder et al.'s thresholds (their eqs. 6 and 7), in pixels: the forward-backward check marks
# a disocclusion, the flow's gradient a motion boundary.
_CONSISTENCY_SHARE, _CONSISTENCY_PIXELS = 0.01, 0.5
_BOUNDARY_SHARE, _BOUNDARY_GRADIENT = 0.01, 0.002
# The temporal term's weight is ``temporal_weight`` times this times the previous frame's own
# loss (content, style and total variation), whatever the loss normalisation: at the default
# 0.5 a reliable pixel that strays about 3.6 levels (of 255, root mean square) from the carried
# frame costs as much as the whole of the rest of the loss (1 / sqrt(0.5 * 1e4) of the range),
# which holds the flicker down while the style can still mend what the flow got a little
# wrong; at 1 that is 2.6 levels, at 0.1 eight. Ruder et al.'s weight of about 1e3 in their
# units plays the same part.
TEMPORAL_SCALE = 1e4
# The least previous loss the temporal weight scales: a previous frame that scored 0 still
# holds the next one.
_LEAST_REFERENCE = 1e-6


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def optical_flow(
    dis: cv2.DISOpticalFlow, frame: np.ndarray, other: np.ndarray, guess: np.ndarray | None = None
) -> np.ndarray:
    """The (H, W, 2) float32 flow ``w`` from ``frame`` to ``other`` (uint8 RGB pictures of one
    size): ``frame(x)`` shows what ``other(x + w(x))`` shows. ``guess`` starts DIS from a
    flow instead of zero (the previous pair's: a camera's motion goes on)."""
    # DIS computes from scratch without a flow to start from; the stubs want one always.
    start: Any = None if guess is None else guess.copy()
    flow: np.ndarray = dis.calc(_gray(frame), _gray(other), start)
    return flow


def _grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sampling positions ``x + flow(x)``: columns, rows."""
    height, width = flow.shape[:2]
    # Broadcast from one row and one column: a full grid of indices costs 16 bytes a pixel.
    columns = flow[..., 0] + np.arange(width, dtype=np.float32)
    rows = flow[..., 1] + np.arange(height, dtype=np.float32)[:, np.newaxis]
    return columns, rows


def _remap(picture: np.ndarray, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``picture`` sampled at (``columns``, ``rows``) (bilinear; positions outside repeat the
    edge)."""
    warped: np.ndarray = cv2.remap(
        picture, columns, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return warped


def warp(picture: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``picture`` sampled at ``x + flow(x)`` (bilinear; positions outside repeat the edge):
    the previous frame carried onto the current one, given the current frame's flow to it."""
    return _remap(picture, *_grid(flow))


def reliable(
    flow: np.ndarray, back: np.ndarray, grid: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """(H, W) bool: where the current frame's ``flow`` to the previous frame holds, given the
    previous frame's flow ``back`` to the current one. Not where the two disagree (a
    disocclusion: ``|w + w_back(x + w)|^2 > 0.01 (|w|^2 + |w_back(x + w)|^2) + 0.5``), at
    motion boundaries (``|grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002``), nor where ``x + w``
    falls outside the previous frame (what came into view). ``grid`` is ``flow``'s sampling
    positions (columns, rows) where the caller has them already."""
    columns, rows = _grid(flow) if grid is None else grid
    # Worked in place where it can: a frame's flow is carried at the output's size, and each
    # whole-frame temporary costs 4 to 8 bytes a pixel (``engine.memory`` counts the rest).
    returned = _remap(back, columns, rows)
    speed = np.square(flow).sum(axis=-1)
    bound = np.square(returned).sum(axis=-1)
    bound += speed
    bound *= _CONSISTENCY_SHARE
    bound += _CONSISTENCY_PIXELS
    returned += flow
    consistent = np.square(returned, out=returned).sum(axis=-1) <= bound
    del returned, bound
    gradient = np.zeros_like(speed)
    for channel in (0, 1):
        for change in np.gradient(flow[..., channel]):
            gradient += np.square(change, out=change)
    speed *= _BOUNDARY_SHARE
    speed += _BOUNDARY_GRADIENT
    smooth = gradient <= speed
    height, width = flow.shape[:2]
    inside = (columns >= 0) & (columns <= width - 1) & (rows >= 0) & (rows <= height - 1)
    mask: np.ndarray = consistent & smooth & inside
    return mask


@dataclass(frozen=True)
class Carried:
    """The previous stylised frame carried onto the current one, and where it holds."""

    # (H, W, 3) float32, 0-255 RGB.
    picture: np.ndarray
    # (H, W) bool: where the flow is reliable.
    mask: np.ndarray

    @property
    def fraction(self) -> float:
        """The share of the frame's pixels that keep the previous frame."""
        return float(self.mask.mean())


class FlowTracker:
    """Follows one clip: carries each stylised frame onto the next input frame, each flow
    started from the previous pair's."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow.create(_PRESET)
        # The previous pair's flows (current to previous, previous to current).
        self._guess: tuple[np.ndarray, np.ndarray] | None = None

    def carry(self, previous: np.ndarray, current: np.ndarray, stylised: np.ndarray) -> Carried:
        """``stylised`` (the previous frame's output, uint8 RGB at the size of the input
        frames ``previous`` and ``current``) carried onto ``current``."""
        guess = self._guess
        if guess is not None and guess[0].shape[:2] != current.shape[:2]:
            guess = None
        flow = optical_flow(self._dis, current, previous, None if guess is None else guess[0])
        back = optical_flow(self._dis, previous, current, None if guess is None else guess[1])
        self._guess = (flow, back)
        grid = _grid(flow)
        picture = _remap(stylised.astype(np.float32), *grid)
        return Carried(picture, reliable(flow, back, grid))


def blend(stylised: np.ndarray, carried: Carried, share: float) -> np.ndarray:
    """The instant tier's consistent frame: its own ``stylised`` picture (uint8 RGB) with
    ``share`` of the carried previous output blended in where the flow holds (0: itself)."""
    weight = (share * carried.mask.astype(np.float32))[..., np.newaxis]
    mixed = stylised.astype(np.float32) + weight * (carried.picture - stylised)
    out: np.ndarray = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class TemporalTarget:
    """The optimisation's temporal term (Ruder et al.'s eq. 8): ``weight`` times the mean,
    over the picture's values, of the squared difference to the carried ``picture`` where
    ``mask`` holds, in units of the whole range (255)."""

    # (1, 3, H, W) 0-255 RGB, and (1, 1, H, W) 0 or 1.
    picture: Tensor
    mask: Tensor
    weight: float

    def __call__(self, pixels: Tensor) -> Tensor:
        """The weighted term of the (1, 3, H, W) 0-255 RGB ``pixels``."""
        squared = (self.mask * (pixels - self.picture).square()).sum()
        return self.weight * squared / (pixels.numel() * 255.0**2)


def temporal_target(
    carried: Carried, temporal_weight: float, reference: float, device: torch.device
) -> TemporalTarget:
    """The temporal term holding a frame to ``carried``, weighted by ``temporal_weight``
    (0 to 1) scaled by ``reference``, the previous frame's own loss (see TEMPORAL_SCALE)."""
    picture = torch.from_numpy(carried.picture).permute(2, 0, 1).unsqueeze(0).to(device)
    mask = torch.from_numpy(carried.mask.astype(np.float32))[None, None].to(device)
    weight = temporal_weight * TEMPORAL_SCALE * max(reference, _LEAST_REFERENCE)
    return TemporalTarget(picture.contiguous(), mask, weight)
