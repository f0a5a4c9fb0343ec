"""Temporal consistency: DIS flow, warping and the reliability mask on pictures of known motion,
the temporal term, and ``run_video`` in both tiers on the tiny networks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from styleserve.options import PRESETS
from styleserve.plan import plan_frame, video_iterations
from styleserve_export.feed_forward import tiny_pair
from styleserve_server.engine import FeedForward, FrameDone, Iterate, VideoDone, run_job, run_video
from styleserve_server.engine.records import JobCancelled
from styleserve_server.engine.temporal import (
    TEMPORAL_SCALE,
    Carried,
    FlowTracker,
    blend,
    optical_flow,
    reliable,
    temporal_target,
    warp,
)

from tests.server.engine.engine_cancel import SetAfter

pytestmark = pytest.mark.timeout(300)

CPU = torch.device("cpu")
SHIFT = (3, 2)  # columns, rows the camera moves between frames
FAST = {"size": 48, "iterations": 4, "precision": "float32", "scales": (1.0,)}


def panorama(width: int = 160, height: int = 120) -> np.ndarray:
    """A smooth, textured RGB scene (blurred seeded noise over gradients): DIS needs texture."""
    rng = np.random.default_rng(7)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (0, 0), 2.0)
    y, x = np.mgrid[0:height, 0:width]
    ramp = np.stack([x * 255 / width, y * 255 / height, (x + y) * 128 / (width + height)], -1)
    return np.clip(0.6 * noise + 0.4 * ramp, 0, 255).astype(np.uint8)


def clip(frames: int, size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    """Frames of a camera panning over ``panorama`` by SHIFT a frame: frame i + 1 at x shows
    what frame i showed at x + SHIFT."""
    scene = panorama()
    w, h = size
    return [
        scene[10 + i * SHIFT[1] : 10 + i * SHIFT[1] + h, 10 + i * SHIFT[0] : 10 + i * SHIFT[0] + w]
        for i in range(frames)
    ]


def grainy(frames: list[np.ndarray], spread: float = 8.0) -> list[np.ndarray]:
    """``frames`` with fresh sensor noise each: what makes independent frames flicker."""
    rng = np.random.default_rng(3)
    return [np.clip(f + rng.normal(0, spread, f.shape), 0, 255).astype(np.uint8) for f in frames]


def pictures(frames: list[np.ndarray]) -> list[Image.Image]:
    return [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in frames]


def test_flow_recovers_a_known_shift():
    previous, current = clip(2)
    flow = optical_flow(
        cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_FAST), current, previous
    )
    interior = flow[8:-8, 8:-8].reshape(-1, 2)
    assert np.median(interior, axis=0) == pytest.approx(SHIFT, abs=0.1)
    assert np.mean(np.abs(interior - SHIFT) < 0.5) > 0.9


def test_the_mask_marks_the_strip_that_came_into_view_and_the_warp_matches_inside():
    previous, current = clip(2)
    tracker = FlowTracker()
    carried = tracker.carry(previous, current, previous)  # "stylised" = the input itself
    mask = carried.mask
    # The last SHIFT columns and rows of the current frame were outside the previous one.
    assert not mask[:, -SHIFT[0] :].any()
    assert not mask[-SHIFT[1] :, :].any()
    assert mask[4 : -4 - SHIFT[1], 4 : -4 - SHIFT[0]].mean() > 0.95
    assert 0.8 < carried.fraction < 1.0
    difference = np.abs(carried.picture - current.astype(np.float32)).mean(axis=-1)
    assert difference[mask].mean() < 2.0  # levels of 255
    assert difference[~mask].mean() > difference[mask].mean()


def test_an_occluding_square_is_left_free_where_it_uncovers_the_scene():
    previous, current = clip(1)[0].copy(), clip(1)[0].copy()
    square = np.full((14, 14, 3), (250, 30, 30), np.uint8)
    square[::2, ::2] = (20, 200, 20)  # textured, so that the flow follows it
    previous[16:30, 16:30] = square
    current[16:30, 24:38] = square  # moved 8 px right over a still scene
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = optical_flow(dis, current, previous)
    back = optical_flow(dis, previous, current)
    mask = reliable(flow, back)
    uncovered = mask[18:28, 17:23]  # the square stood here before and the scene shows now
    assert uncovered.mean() < 0.5
    assert mask[:, 45:].mean() > 0.9  # the still scene far from the square holds


def test_warping_by_zero_flow_is_the_identity_and_a_still_clip_is_reliable_everywhere():
    frame = clip(1)[0]
    assert np.array_equal(warp(frame, np.zeros((*frame.shape[:2], 2), np.float32)), frame)
    carried = FlowTracker().carry(frame, frame, frame)
    assert carried.fraction == 1.0


def test_blend_takes_its_share_of_the_carried_frame_where_the_mask_holds():
    stylised = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True
    carried = Carried(np.full((4, 4, 3), 200.0, np.float32), mask)
    mixed = blend(stylised, carried, 0.25)
    assert (mixed[:, :2] == 125).all() and (mixed[:, 2:] == 100).all()
    assert np.array_equal(blend(stylised, carried, 0.0), stylised)


def test_the_temporal_term_and_its_gradient():
    rng = np.random.default_rng(1)
    picture = rng.uniform(0, 255, (8, 6, 3)).astype(np.float32)
    mask = rng.uniform(size=(8, 6)) > 0.5
    target = temporal_target(Carried(picture, mask), 0.5, 2.0, CPU)
    assert target.weight == pytest.approx(0.5 * TEMPORAL_SCALE * 2.0)
    x = torch.from_numpy(picture).permute(2, 0, 1)[None].clone() + 5.0
    x.requires_grad_(True)
    term = target(x)
    # Every reliable value is 5 levels off: weight * 25 * reliable share / 255**2.
    assert float(term.detach()) == pytest.approx(
        target.weight * 25 * mask.mean() / 255**2, rel=1e-5
    )
    (gradient,) = torch.autograd.grad(term, x)
    expected = (
        2 * target.weight * 5.0 * torch.from_numpy(mask.astype(np.float32)) / (x.numel() * 255**2)
    )
    assert torch.allclose(gradient[0], expected.expand(3, -1, -1), rtol=1e-5)
    assert float(target(torch.from_numpy(picture).permute(2, 0, 1)[None])) == 0.0


def frame_differences(images: list[Image.Image], frames: list[np.ndarray]) -> float:
    """The mean change between consecutive outputs, each carried onto the next by the
    true motion (in the region both frames see)."""
    dx, dy = SHIFT
    changes = []
    for before, after in zip(images, images[1:], strict=False):
        a, b = np.asarray(before, np.float32), np.asarray(after, np.float32)
        changes.append(np.abs(b[: -dy or None, : -dx or None] - a[dy:, dx:]).mean())
    return float(np.mean(changes))


def records(frames, styles, options, **kwargs):
    out = list(run_video(pictures(frames), styles, options, **kwargs))
    done = [r for r in out if isinstance(r, FrameDone)]
    return out, done


def test_independent_frames_are_each_the_job_on_that_frame(tiny, warm_style):
    frames = clip(3)
    options = PRESETS["default"].replace(backbone="tiny-vgg16", temporal_weight=0.0, seed=5, **FAST)
    _, done = records(frames, [warm_style], options, backbone=tiny)
    for frame, record in zip(pictures(frames), done, strict=True):
        alone = list(run_job(tiny, frame, [warm_style], options))[-1]
        assert np.array_equal(np.asarray(record.image), np.asarray(alone.image))
        assert record.consistent_fraction == 0.0 and record.losses.temporal == 0.0


def test_consistent_optimisation_starts_from_the_carried_frame_and_reports_its_term(
    tiny, warm_style
):
    frames = grainy(clip(4))
    options = PRESETS["default"].replace(backbone="tiny-vgg16", seed=5, **FAST)
    out, done = records(frames, [warm_style], options, backbone=tiny)
    iterations = [r for r in out if isinstance(r, Iterate)]
    size = Image.fromarray(frames[0]).size
    assert len(iterations) == video_iterations(size, options, len(frames))
    assert [r.iterations for r in done] == [
        plan_frame(size, options, i)[-1].iterations for i in range(len(frames))
    ]
    assert [r.index for r in done] == [0, 1, 2, 3]
    assert done[0].losses.temporal == 0.0 and done[0].consistent_fraction == 0.0
    for record in done[1:]:
        assert record.losses.temporal > 0.0
        assert 0.7 < record.consistent_fraction < 1.0
        assert record.losses.total == pytest.approx(
            record.losses.content + record.losses.style + record.losses.tv + record.losses.temporal
        )
    end = out[-1]
    assert isinstance(end, VideoDone) and end.frames == 4 and end.seed == 5
    assert (end.width, end.height) == done[0].image.size == (48, 36)
    independent = records(
        frames, [warm_style], options.replace(temporal_weight=0.0), backbone=tiny
    )[1]
    consistent_change = frame_differences([r.image for r in done], frames)
    independent_change = frame_differences([r.image for r in independent], frames)
    assert consistent_change < independent_change


@pytest.fixture(scope="module")
def feed_forward() -> FeedForward:
    return FeedForward(tiny_pair(), CPU, 1)


def test_instant_frames_blend_the_carried_frame_by_the_weight(feed_forward, warm_style):
    frames = grainy(clip(4))
    options = PRESETS["instant"].replace(size=48)
    _, alone = records(
        frames, [warm_style], options.replace(temporal_weight=0.0), feed_forward=feed_forward
    )
    for frame, record in zip(pictures(frames), alone, strict=True):
        single = feed_forward.picture(frame, [warm_style], options)
        assert np.array_equal(np.asarray(record.image), np.asarray(single))
    out, done = records(frames, [warm_style], options, feed_forward=feed_forward)
    assert [r.index for r in done] == [0, 1, 2, 3] and not any(isinstance(r, Iterate) for r in out)
    assert np.array_equal(np.asarray(done[0].image), np.asarray(alone[0].image))
    assert all(0.7 < r.consistent_fraction < 1.0 for r in done[1:])
    consistent = frame_differences([r.image for r in done], frames)
    assert consistent < frame_differences([r.image for r in alone], frames)


@pytest.mark.parametrize(
    ("checks", "frames_done"),
    [
        # The second look is the instant picture's own, in frame 0: the picture stops there.
        (2, 0),
        # Frame 1's flow, then a look before its picture: frame 0 delivered, frame 1 not.
        (4, 1),
    ],
)
def test_a_cancel_stops_an_instant_video_in_its_frames_picture_or_after_its_flow(
    feed_forward, warm_style, checks, frames_done
):
    cancel = SetAfter(checks)
    options = PRESETS["instant"].replace(size=48)
    done = []
    with pytest.raises(JobCancelled):
        for record in run_video(
            pictures(clip(3)), [warm_style], options, feed_forward=feed_forward, cancel=cancel
        ):
            done += [record] if isinstance(record, FrameDone) else []
    assert len(done) == frames_done and cancel.looks == checks
