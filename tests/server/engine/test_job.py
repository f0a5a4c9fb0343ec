"""``run_job`` on the tiny backbone: records, controls, determinism, cancellation, memory."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from styleserve.options import resolve
from styleserve_server.engine import Finished, Iterate, JobCancelled, Losses, run_job
from styleserve_server.engine.precision import auto_precision

from tests.server.engine.engine_pictures import stripes
from tests.server.engine.engine_scoring import delivered, score


def _run(backbone, content, styles, **overrides):
    """All records of a job with the default preset and ``overrides``."""
    preset = overrides.pop("preset", "default")
    init_image = overrides.pop("init_image", None)
    options = resolve(preset, **{"seed": 7, "size": 48, "iterations": 4, **overrides})
    return list(run_job(backbone, content, styles, options, init_image=init_image))


def _pixels(records) -> np.ndarray:
    return np.asarray(records[-1].image, dtype=np.int16)


def test_records_count_iterations_over_all_stages(tiny, content, warm_style) -> None:
    records = _run(tiny, content, [warm_style], scales=(0.5, 1.0), iterations=40)
    iterates, finished = records[:-1], records[-1]
    assert all(isinstance(r, Iterate) for r in iterates)
    assert isinstance(finished, Finished)
    assert [r.iteration for r in iterates] == list(range(1, 43))
    assert {r.total for r in iterates} == {42}
    stages = [(r.stage, r.width, r.height) for r in iterates]
    assert stages == [(0, 24, 16)] * 2 + [(1, 48, 32)] * 40
    assert all(r.preview is None for r in iterates)
    assert finished.image.size == (48, 32) and finished.image.mode == "RGB"
    assert finished.iterations == 42 and finished.seed == 7
    assert finished.device == "cpu"
    assert finished.precision_choice is auto_precision(tiny)
    assert finished.precision == finished.precision_choice.precision
    assert finished.losses == iterates[-1].losses
    losses = finished.losses
    assert losses.total == pytest.approx(losses.content + losses.style + losses.tv)
    elapsed = [r.elapsed for r in iterates]
    assert elapsed == sorted(elapsed) and finished.setup_seconds <= elapsed[0]


def test_previews_only_when_asked(tiny, content, warm_style) -> None:
    records = _run(tiny, content, [warm_style], iterations=5, scales=(1.0,), preview_every=2)
    previews = [r.preview for r in records[:-1]]
    assert [p is not None for p in previews] == [False, True, False, True, True]
    assert previews[1].size == (256, 171)  # longest side preview_size, the output's aspect


def test_output_size_width_by_height(tiny, content, warm_style) -> None:
    records = _run(tiny, content, [warm_style], width=40, height=24, iterations=1)
    assert records[-1].image.size == (40, 24)


def test_seed_preset_counts_rounds_and_falls(tiny, content, warm_style) -> None:
    records = _run(tiny, content, [warm_style], preset="seed", width=48, height=32, iterations=3)
    totals = [r.losses.total for r in records[:-1]]
    assert len(totals) == 3 and records[-1].precision == "float32"
    assert totals[0] > totals[1] > totals[2]


def test_same_seed_same_pixels_other_seed_other_pixels(tiny, content, warm_style) -> None:
    for precision in ("float32", "auto"):
        runs = [
            _pixels(_run(tiny, content, [warm_style], init="noise", seed=s, precision=precision))
            for s in (3, 3, 4)
        ]
        np.testing.assert_array_equal(runs[0], runs[1])
        assert np.abs(runs[0] - runs[2]).mean() > 1


def test_drawn_seed_is_reported_and_reproduces(tiny, content, warm_style) -> None:
    drawn = _run(tiny, content, [warm_style], seed=None, init="noise")[-1]
    again = _run(tiny, content, [warm_style], seed=drawn.seed, init="noise")
    np.testing.assert_array_equal(np.asarray(drawn.image), _pixels(again))


def test_blend_weights_select_and_mix_styles(tiny, content, warm_style, cold_style) -> None:
    warm = _pixels(_run(tiny, content, [warm_style]))
    cold = _pixels(_run(tiny, content, [cold_style]))
    only_warm = _pixels(_run(tiny, content, [warm_style, cold_style], style_blend=(1.0, 0.0)))
    only_cold = _pixels(_run(tiny, content, [warm_style, cold_style], style_blend=(0.0, 2.0)))
    mixed = _pixels(_run(tiny, content, [warm_style, cold_style], style_blend=(1.0, 1.0)))
    np.testing.assert_array_equal(only_warm, warm)
    np.testing.assert_array_equal(only_cold, cold)
    assert np.abs(mixed - warm).mean() > 1 and np.abs(mixed - cold).mean() > 1
    # The mix lies between the two: warmer than the cold run, colder than the warm one.
    red_minus_blue = [float((p[..., 0] - p[..., 2]).mean()) for p in (cold, mixed, warm)]
    assert red_minus_blue == sorted(red_minus_blue)


def _chroma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("YCbCr"), dtype=np.float64)[..., 1:]


def test_preserve_color_keeps_the_contents_chroma(tiny, content, warm_style) -> None:
    # A style weight that drives channels to their bounds within a few iterations.
    kwargs = dict(
        iterations=6,
        style_weight=1e6,
        scales=(1.0,),
        loss_normalization="size_independent",
        style_strength=1.0,
    )
    plain = _run(tiny, content, [warm_style], **kwargs)[-1].image
    kept = _run(tiny, content, [warm_style], preserve_color=True, **kwargs)[-1].image
    reference = _chroma(content)
    # The luminance is held where no channel clips, so the chroma survives everywhere, even
    # where the style drove a channel to 0 or 255.
    rgb = np.asarray(kept)
    assert ((rgb == 0) | (rgb == 255)).any(axis=-1).mean() > 0.05
    assert np.abs(_chroma(kept) - reference).max() <= 2.0
    assert np.abs(_chroma(plain) - reference).mean() > 4.0
    # The luminance did change: this is a transfer, not a copy of the content.
    luma = [np.asarray(i.convert("L"), dtype=np.float64) for i in (kept, content)]
    assert np.abs(luma[0] - luma[1]).mean() > 5.0


def test_init_image_starts_from_that_picture(tiny, content, warm_style) -> None:
    grey = Image.new("RGB", (20, 20), (128, 128, 128))
    kwargs = dict(iterations=1, style_weight=0.0, content_weight=0.0, tv_weight=0.0, scales=(1.0,))
    records = _run(tiny, content, [warm_style], init="image", init_image=grey, **kwargs)
    # Nothing to optimise: the result is the init picture at the output size.
    assert np.abs(_pixels(records) - 128).max() <= 1


def test_bad_inputs_say_what_to_do(tiny, content, warm_style) -> None:
    with pytest.raises(ValueError, match="needs a starting picture"):
        _run(tiny, content, [warm_style], init="image")
    with pytest.raises(ValueError, match="one weight per style"):
        _run(tiny, content, [warm_style], style_blend=(1.0, 2.0))
    with pytest.raises(ValueError, match="at least one"):
        _run(tiny, content, [])


def test_cancel_between_iterations_from_another_thread(tiny, content, warm_style) -> None:
    cancel = threading.Event()
    job = run_job(tiny, content, [warm_style], resolve("default", size=48), cancel=cancel)
    assert isinstance(next(job), Iterate)
    setter = threading.Thread(target=cancel.set)
    setter.start()
    setter.join()
    with pytest.raises(JobCancelled):
        next(job)


class _SetsItselfAfter(threading.Event):
    """An event that becomes set on its ``polls``-th check: a cancel landing mid-iteration."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls_left = polls

    def is_set(self) -> bool:
        self.polls_left -= 1
        if self.polls_left == 0:
            self.set()
        return super().is_set()


def test_cancel_inside_a_long_iteration(tiny, content, warm_style) -> None:
    options = resolve("seed", width=48, height=32, iterations=3)  # 20 evaluations per iteration
    cancel = _SetsItselfAfter(polls=25)  # well inside the second round
    job = run_job(tiny, content, [warm_style], options, cancel=cancel)
    assert next(job).iteration == 1
    with pytest.raises(JobCancelled):
        next(job)
    assert cancel.polls_left == 0  # raised at the very poll that saw it set


def test_jobs_leave_the_shared_network_untouched(tiny, content, warm_style) -> None:
    before = {k: v.clone() for k, v in tiny.net.state_dict().items()}
    for precision in ("float32", "bfloat16"):
        _run(tiny, content, [warm_style], precision=precision, iterations=2)
    assert all(p.grad is None and not p.requires_grad for p in tiny.net.parameters())
    for k, v in tiny.net.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float32


def test_losses_are_plain_floats(tiny, content, warm_style) -> None:
    losses = _run(tiny, content, [warm_style], iterations=1)[-1].losses
    assert isinstance(losses, Losses)
    assert all(type(v) is float for v in vars(losses).values())


def test_the_delivered_picture_scores_what_was_reported(tiny, content) -> None:
    """The picture stays inside 0-255, so encoding it costs only the 8-bit rounding."""
    style = stripes(*content.size, ((255, 0, 0), (0, 0, 0), (255, 255, 255)))
    options = resolve(
        "default", width=48, height=32, scales=(1.0,), iterations=8, style_weight=1e6, seed=1
    )
    options = options.replace(precision="float32")
    finished = list(run_job(tiny, content, [style], options))[-1]
    got = score(tiny, options, content, style, delivered(finished.image))
    assert got == pytest.approx(finished.losses.total, rel=0.01)
    # Unbounded, the same job's picture leaves 0-255 and clipping costs far more than 1%.
    seed = options.replace(preset="seed")
    unbounded = list(run_job(tiny, content, [style], seed))[-1]
    clipped = score(tiny, seed, content, style, delivered(unbounded.image))
    assert clipped > 1.05 * unbounded.losses.total
