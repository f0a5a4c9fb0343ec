"""A clip with known motion, and the temporal error of a stylised version of it.

The video benchmark needs a camera move whose true motion is known exactly, so that flicker is
measured against the truth and not against an optical-flow estimate (which would favour the
server's own flow). Each frame is the window of a still picture seen by a camera that pans and
zooms in: frame ``t`` shows the picture's points ``centre_t + (p - c) / zoom_t`` at its pixels
``p`` (``c`` the frame's centre), so the pixel of frame ``t - 1`` that shows what pixel ``p`` of
frame ``t`` shows is known in closed form (``Camera.previous``).

The temporal error of a stylised clip is then the mean absolute difference (0-255 units, over
RGB) between each output frame and the previous output frame carried onto it by that motion,
over the pixels whose source lies inside the previous frame (the rest was not on screen).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Camera:
    """A pan of ``pan`` source pixels per frame (x, y) and a zoom by ``zoom`` per frame, over a
    ``size`` (width, height) window starting centred at ``start`` in the source picture."""

    size: tuple[int, int]
    start: tuple[float, float]
    pan: tuple[float, float]
    zoom: float

    def centre(self, t: int) -> np.ndarray:
        return np.array(self.start) + t * np.array(self.pan)

    def magnification(self, t: int) -> float:
        return float(self.zoom**t)

    def source_points(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Where in the source each pixel of frame ``t`` looks (x and y maps, float32)."""
        width, height = self.size
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height))
        cx, cy = self.centre(t)
        m = self.magnification(t)
        return (
            (cx + (xs - (width - 1) / 2) / m).astype(np.float32),
            (cy + (ys - (height - 1) / 2) / m).astype(np.float32),
        )

    def previous(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """For each pixel of frame ``t``, the pixel of frame ``t - 1`` showing the same point."""
        width, height = self.size
        sx, sy = self.source_points(t)
        cx, cy = self.centre(t - 1)
        m = self.magnification(t - 1)
        return (
            ((sx - cx) * m + (width - 1) / 2).astype(np.float32),
            ((sy - cy) * m + (height - 1) / 2).astype(np.float32),
        )


def frames(source: Image.Image, camera: Camera, count: int) -> list[np.ndarray]:
    """``count`` RGB frames (uint8, height x width x 3) of ``source`` seen by ``camera``; the
    windows must stay inside the picture."""
    picture = np.asarray(source.convert("RGB"))
    out = []
    for t in range(count):
        mx, my = camera.source_points(t)
        if mx.min() < 0 or my.min() < 0 or mx.max() > picture.shape[1] - 1:
            raise ValueError(f"frame {t} looks outside the {source.size} picture")
        if my.max() > picture.shape[0] - 1:
            raise ValueError(f"frame {t} looks outside the {source.size} picture")
        out.append(cv2.remap(picture, mx, my, cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT))
    return out


def temporal_error(outputs: list[np.ndarray], camera: Camera) -> float:
    """Mean absolute difference (0-255) between each output frame and the previous output
    frame carried onto it by the camera's true motion, where that motion stays on screen."""
    errors = []
    for t in range(1, len(outputs)):
        height, width = outputs[t].shape[:2]
        if (width, height) != camera.size:
            raise ValueError(f"output frame {t} is {width}x{height}, not {camera.size}")
        px, py = camera.previous(t)
        warped = cv2.remap(outputs[t - 1], px, py, cv2.INTER_LINEAR)
        seen = (px >= 0) & (py >= 0) & (px <= width - 1) & (py <= height - 1)
        diff = np.abs(outputs[t].astype(np.float32) - warped.astype(np.float32)).mean(axis=2)
        errors.append(float(diff[seen].mean()))
    return float(np.mean(errors))
