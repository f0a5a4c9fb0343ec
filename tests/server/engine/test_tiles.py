"""Big pictures in bounded memory: tiled evaluation (``engine.tiles``), whose interiors
partition every layer's map, each interior cell the whole picture's, and whose objective,
gradient, targets and whole job are the untiled ones; the compact L-BFGS; the predicted peak."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from styleserve.options import PRESETS, VGG_LAYERS, resolve
from styleserve_server.engine import JobCancelled, optimize, run_job
from styleserve_server.engine.box import Box
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import to_tensor
from styleserve_server.engine.losses import gram
from styleserve_server.engine.memory import predicted_peak_bytes
from styleserve_server.engine.objective import Objective, StylePart, Weights, style_targets
from styleserve_server.engine.optimize import state_bytes
from styleserve_server.engine.regions import footprints, shares, stage_guides
from styleserve_server.engine.tiles import forward, plan_tiles, tile_borders

from tests.server.engine.engine_pictures import landscape, stripes

DEFAULT = PRESETS["default"]
LAYERS = tuple(dict.fromkeys((*DEFAULT.content_layers, *DEFAULT.style_layers)))
SIDE = 512
# Windows of 320 x 320 pixels at most: a 512 x 512 picture in 2 x 2 tiles (256-pixel interiors
# and halos of 58 and 64 pixels, the near side's rounded to VGG16's total stride of 16).
TILE = 320 * 320
# The tiled and the untiled evaluations add the same numbers in other orders.
RELATIVE = 1e-4


def _relative(tiled: torch.Tensor, whole: torch.Tensor) -> float:
    return float((tiled - whole).norm() / whole.norm())


def _pictures(side: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(content, style, picture evaluated): the picture between the content and noise, so that
    every term counts."""
    content = to_tensor(landscape(side, side), device)
    style = to_tensor(stripes(300, 300, ((250, 60, 20), (250, 200, 30), (20, 60, 250))), device)
    noise = torch.rand(content.shape, generator=torch.Generator().manual_seed(0)) * 255.0
    return content, style, 0.7 * content + 0.3 * noise.to(device)


def _evaluate(objective: Objective, picture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(terms, gradient of the total)."""
    x = picture.clone().requires_grad_(True)
    loss, terms = objective(x)
    (gradient,) = torch.autograd.grad(loss, x)
    return terms.detach(), gradient


def _assert_tiled_is_untiled(make) -> None:
    """``make(content, tile_pixels)`` builds an objective; in 2 x 2 tiles its terms and
    gradient are the untiled ones."""
    assert len(plan_tiles(SIDE, SIDE, TILE, "vgg16", LAYERS).tiles) == 4
    content, _, picture = _pictures(SIDE, torch.device("cpu"))
    whole, tiled = make(content, None), make(content, TILE)
    terms, gradient = _evaluate(whole, picture)
    tiled_terms, tiled_gradient = _evaluate(tiled, picture)
    for term, tiled_term in zip(terms, tiled_terms, strict=True):
        assert float(term) > 0
        assert float(tiled_term) == pytest.approx(float(term), rel=RELATIVE)
    assert _relative(tiled_gradient, gradient) < RELATIVE


@pytest.mark.parametrize(
    ("height", "width", "tile_pixels"),
    [(512, 512, TILE), (300, 517, 40_000), (97, 1000, 30_000), (1000, 40, 12_000)],
)
def test_the_interiors_partition_every_layer(height: int, width: int, tile_pixels: int) -> None:
    """Windows within the budget, aligned to the total stride, padded by the deepest halo
    unless at the picture's edge; every cell of every layer in exactly one interior."""
    plan = plan_tiles(height, width, tile_pixels, "vgg16", LAYERS)
    assert len(plan.tiles) > 1
    stride, halo = footprints("vgg16")["block5_conv1"]
    for tile in plan.tiles:
        top, left, bottom, right = tile.window
        inner_top, inner_left, inner_bottom, inner_right = tile.interior
        assert (bottom - top) * (right - left) <= tile_pixels
        assert top % stride == 0 and left % stride == 0
        # A halo stops short only at the picture's edge, whose padding is the real one.
        assert top == 0 or inner_top - top >= halo
        assert left == 0 or inner_left - left >= halo
        assert bottom == height or bottom - inner_bottom >= halo
        assert right == width or right - inner_right >= halo
    for layer in VGG_LAYERS["vgg16"]:
        s = footprints("vgg16")[layer][0]
        count = np.zeros((height // s, width // s), dtype=int)
        for tile in plan.tiles:
            count[tile.cells(s)] += 1
        assert (count == 1).all(), layer
    assert plan.rows == tuple(sorted({t.interior[0] for t in plan.tiles} - {0}))
    assert plan.columns == tuple(sorted({t.interior[1] for t in plan.tiles} - {0}))
    assert tile_borders((width, height), tile_pixels) == (plan.columns, plan.rows)


def test_a_picture_within_the_budget_is_one_tile() -> None:
    for tile_pixels in (None, 512 * 512):
        (tile,) = plan_tiles(512, 512, tile_pixels, "vgg16", LAYERS).tiles
        assert tile.whole and tile.window == tile.interior == (0, 0, 512, 512)
    with pytest.raises(ValueError, match="at least"):
        plan_tiles(512, 512, 10_000, "vgg16", LAYERS)


def test_each_interior_cell_is_the_whole_pictures(tiny) -> None:
    net = FeatureNet(tiny, "float32")
    picture = to_tensor(landscape(517, 300), net.device)
    layers = VGG_LAYERS["vgg16"][:11]  # up to block5_conv1
    with torch.no_grad():
        whole = net(picture, layers)
    plan = plan_tiles(300, 517, 40_000, net.arch, layers)
    for tile, features in forward(net, picture, layers, plan, lambda: None):
        for layer in layers:
            s = footprints(net.arch)[layer][0]
            got, expected = (
                features[layer][(..., *tile.local(s))],
                whole[layer][(..., *tile.cells(s))],
            )
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.max()))


def test_tiled_style_targets_are_the_untiled(tiny) -> None:
    """Compared with the whole picture's features' Gram matrices summed in float64: summed in
    float32 over all 126,000 positions of block1_conv1 at once, this saturated style's rounds
    to 1.2e-4 of it, the tiles' to 4e-6."""
    net = FeatureNet(tiny, "float32")
    style = to_tensor(stripes(300, 420, ((250, 60, 20), (20, 60, 250))), net.device)
    tiled = style_targets(net, DEFAULT.style_layers, "relative", [style], (), tile_pixels=40_000)
    with torch.no_grad():
        whole = net(style, DEFAULT.style_layers)
    for layer, f in whole.items():
        assert _relative(tiled[layer].double(), gram(f.double(), normalize=True)) < RELATIVE


def test_tiled_objective_is_the_untiled_on_the_tiny_network(tiny) -> None:
    """At 512x512 in 4 tiles, with the default preset's options (relative normalisation,
    strength 0.75): the same terms and gradient within 1e-4 (float32)."""
    net = FeatureNet(tiny, "float32")
    _, style, _ = _pictures(SIDE, net.device)
    weights = Weights.from_options(DEFAULT)
    _assert_tiled_is_untiled(lambda c, t: Objective(net, weights, c, [style], tile_pixels=t))


def test_tiled_objective_with_regions_is_the_untiled(tiny) -> None:
    """Two styles, each painting a half (guided Gram matrices, eroded guides)."""
    net = FeatureNet(tiny, "float32")
    _, warm, _ = _pictures(SIDE, net.device)
    cold = to_tensor(stripes(200, 200, ((20, 60, 250), (10, 10, 60))), net.device)
    left = np.zeros((SIDE, SIDE), bool)
    left[:, : SIDE // 3] = True
    masks = [left, ~left]
    guides = stage_guides(masks, (SIDE, SIDE), 8.0, net.arch, DEFAULT.style_layers, net.device)
    parts = [
        StylePart(style_targets(net, DEFAULT.style_layers, "relative", [p], ()), g, share)
        for p, g, share in zip((warm, cold), guides, shares(masks), strict=True)
    ]
    weights = Weights.from_options(DEFAULT)
    _assert_tiled_is_untiled(lambda c, t: Objective(net, weights, c, parts=parts, tile_pixels=t))


@pytest.mark.vgg
@pytest.mark.slow
def test_tiled_objective_is_the_untiled_on_vgg16(keras_vgg16) -> None:
    """The issue's test on the real network: 512x512 in 4 tiles, default options, float32."""
    net = FeatureNet(keras_vgg16, "float32")
    _, style, _ = _pictures(SIDE, net.device)
    weights = Weights.from_options(DEFAULT)
    _assert_tiled_is_untiled(lambda c, t: Objective(net, weights, c, [style], tile_pixels=t))


def test_the_gradient_pass_starts_with_the_last_tiles_graph(tiny, monkeypatch) -> None:
    """N tiles take 2N - 1 passes of the network for a loss and gradient (the last tile's
    first pass keeps its graph for the second), and N for a loss alone, which keeps none."""
    net = FeatureNet(tiny, "float32")
    content, style, picture = _pictures(SIDE, net.device)
    objective = Objective(net, Weights.from_options(DEFAULT), content, [style], tile_pixels=TILE)
    passes: list[None] = []
    network = FeatureNet.__call__

    def counted(self: FeatureNet, pixels: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        passes.append(None)
        return network(self, pixels, layers)

    monkeypatch.setattr(FeatureNet, "__call__", counted)
    terms, gradient = _evaluate(objective, picture)
    assert len(passes) == 2 * 4 - 1
    passes.clear()
    with torch.no_grad():
        _, alone = objective(picture)
    assert len(passes) == 4
    assert torch.equal(alone, terms)
    assert float(gradient.abs().sum()) > 0


def test_a_cancel_lands_between_tiles(tiny) -> None:
    """``poll`` runs before every tile of both passes (but the last tile's second, which
    continues its first); what it raises stops the evaluation, from the backward pass too."""
    net = FeatureNet(tiny, "float32")
    content, style, picture = _pictures(SIDE, net.device)
    polls: list[None] = []
    stop_at = [math.inf]

    def poll() -> None:
        polls.append(None)
        if len(polls) >= stop_at[0]:
            raise JobCancelled("cancelled")

    objective = Objective(
        net, Weights.from_options(DEFAULT), content, [style], tile_pixels=TILE, poll=poll
    )
    polls.clear()
    stop_at[0] = 6
    x = picture.requires_grad_(True)
    loss, _ = objective(x)
    assert len(polls) == 4
    with pytest.raises(JobCancelled):
        torch.autograd.grad(loss, x)
    assert len(polls) == 6


def test_a_tiled_job_makes_the_untiled_picture(tiny) -> None:
    """The default preset in float32 at 192 px: its last stage, its content and its style
    picture in 4 tiles make the picture the job makes untiled (L-BFGS amplifies the rounding
    a little over the iterations)."""
    side, tile_pixels = 192, 160 * 160
    assert len(plan_tiles(side, side, tile_pixels, "vgg16", LAYERS).tiles) == 4
    content = landscape(side, side)
    style = stripes(200, 200, ((250, 60, 20), (250, 200, 30), (120, 20, 10)))
    options = resolve("default", seed=3, size=side, iterations=6, precision="float32")
    pictures = [
        np.asarray(list(run_job(tiny, content, [style], options, tile_pixels=t))[-1].image, float)
        for t in (None, tile_pixels)
    ]
    difference = np.abs(pictures[0] - pictures[1])
    assert difference.mean() < 0.05 and difference.max() <= 2
    assert np.abs(pictures[0] - np.asarray(content, float)).mean() > 1  # the job did change it


def test_the_compact_lbfgs_falls_as_torchs(tiny, monkeypatch) -> None:
    """Over the state budget (here every picture is), continuous L-BFGS keeps its history in
    bfloat16 and searches its steps for sufficient decrease only: with its least history (1
    pair) it is within 5% of torch's L-BFGS with 50 after the 10 iterations a climbing stage
    runs, and within 20% after 30 (1.9% and 15.3% measured)."""
    content = landscape(96, 64)
    style = stripes(40, 40, ((250, 60, 20), (250, 200, 30), (120, 20, 10)))
    options = resolve("default", seed=7, size=96, iterations=30, scales=(1.0,), precision="float32")

    def totals() -> list[float]:
        return [r.losses.total for r in list(run_job(tiny, content, [style], options))[:-1]]

    plain = totals()
    monkeypatch.setattr(optimize, "_STATE_BYTES", 1)
    compact = totals()
    assert compact != plain  # the patch took effect: another optimiser ran
    assert compact[-1] < 0.3 * compact[0]
    assert compact[9] < 1.05 * plain[9]
    assert compact[-1] < 1.2 * plain[-1]


def test_big_pictures_hold_bounded_state() -> None:
    """At 12 and 24 MP the optimiser's state fits its budget of 1 GiB (torch's L-BFGS would
    hold (7 + 2 x 5) float32 pictures, 2.3 GiB at 12 MP); a job's predicted peak grows past the
    tile size by the stages' own per-pixel state only."""
    for pixels in (4000 * 3000, 5657 * 4243):
        assert state_bytes("lbfgs", 1, 3 * pixels) <= 2**30
    options = resolve("default", limits=None, size=4000)

    def peak(side: int, tile_pixels: int | None) -> int:
        stages = [(side, side * 3 // 4)]
        return predicted_peak_bytes(stages, options, "bfloat16", tile_pixels)

    assert peak(4000, 2**20) < peak(4000, None) / 4
    assert peak(2048, 2**20) < peak(4000, 2**20) < 3 * 2**30


@pytest.mark.parametrize("per_pixel", [False, True])
def test_a_box_clamps_each_window_as_the_whole_picture(tiny, per_pixel: bool) -> None:
    """The evaluator hands the objective the variable itself and its box (uniform bounds, or
    per pixel as with colour preserved): each window clamped, its gradient passed straight
    through, gives the terms and gradient of the whole clamped picture, whole or in tiles."""
    net = FeatureNet(tiny, "float32")
    content, style, picture = _pictures(SIDE, net.device)
    picture = picture * 1.5 - 60.0  # a good part of it outside 0-255
    if per_pixel:
        margin = torch.rand((1, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(1)) * 50
        box = Box(margin, 255.0 - margin)
    else:
        box = Box(torch.tensor(0.0), torch.tensor(255.0))
    weights = Weights.from_options(DEFAULT)
    whole = Objective(net, weights, content, [style])
    clamped = box.bounded(picture)
    assert not torch.equal(clamped, picture)
    terms, gradient = _evaluate(whole, clamped)
    for tile_pixels in (None, TILE):
        objective = Objective(net, weights, content, [style], tile_pixels=tile_pixels)
        x = picture.clone().requires_grad_(True)
        loss, boxed_terms = objective(x, box)
        (boxed_gradient,) = torch.autograd.grad(loss, x)
        assert torch.allclose(boxed_terms.detach(), terms, rtol=RELATIVE)
        assert _relative(boxed_gradient, gradient) < RELATIVE
