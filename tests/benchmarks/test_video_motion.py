"""The video benchmark's yardstick: its camera's true motion, and the temporal error on it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.video_motion import Camera, frames, temporal_error


@pytest.fixture
def source() -> Image.Image:
    """A smooth, textured picture: bilinear sampling of it is nearly exact."""
    ys, xs = np.mgrid[0:200, 0:300].astype(np.float32)
    picture = np.stack(
        [
            127 + 100 * np.sin(xs / 9) * np.cos(ys / 13),
            127 + 100 * np.cos(xs / 7 + ys / 11),
            127 + 100 * np.sin((xs + ys) / 15),
        ],
        axis=-1,
    )
    return Image.fromarray(picture.astype(np.uint8))


def test_a_pan_moves_every_pixel_by_the_pan():
    camera = Camera(size=(40, 30), start=(100.0, 80.0), pan=(3.0, -2.0), zoom=1.0)
    px, py = camera.previous(1)
    ys, xs = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(px, xs + 3.0, atol=1e-4)
    np.testing.assert_allclose(py, ys - 2.0, atol=1e-4)


def test_a_zoom_keeps_the_centre_and_pulls_the_rest_in():
    camera = Camera(size=(41, 31), start=(100.0, 80.0), pan=(0.0, 0.0), zoom=2.0)
    px, py = camera.previous(1)
    assert (px[15, 20], py[15, 20]) == pytest.approx((20.0, 15.0))
    # Frame 1 shows at its corner what frame 0 showed halfway to its centre.
    assert (px[0, 0], py[0, 0]) == pytest.approx((10.0, 7.5))


def test_the_clip_itself_has_almost_no_temporal_error_and_flicker_has_much(source):
    camera = Camera(size=(64, 48), start=(120.0, 90.0), pan=(2.0, 1.0), zoom=1.01)
    clip = frames(source, camera, 6)
    still = temporal_error(clip, camera)
    rng = np.random.default_rng(0)
    flicker = [
        np.clip(f.astype(np.int16) + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8)
        for f in clip
    ]
    assert still < 2.0
    assert temporal_error(flicker, camera) > 5 * still


def test_a_window_outside_the_picture_is_refused(source):
    camera = Camera(size=(64, 48), start=(10.0, 10.0), pan=(0.0, 0.0), zoom=1.0)
    with pytest.raises(ValueError, match="outside"):
        frames(source, camera, 1)
