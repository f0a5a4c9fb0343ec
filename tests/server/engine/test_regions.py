"""Regions on the tiny backbone: each style paints its own region, the keep region is the
content, no style reaches past the border, and one mask of the whole picture is no regions.

The pictures are 96x32 (two 48-pixel halves): wide enough that the deep layers' guides keep
cells of their own, small enough that a job takes a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from styleserve.options import LOSS_NORMALIZATIONS, resolve
from styleserve_server.engine import run_job
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import to_tensor
from styleserve_server.engine.losses import gram, guided_gram
from styleserve_server.engine.objective import Objective, StylePart, Weights, style_targets
from styleserve_server.engine.regions import keep_weight, stage_guides
from torch.nn import functional as F

from tests.server.engine.engine_pictures import landscape, stripes

WIDTH, HEIGHT = 96, 32


def _left(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[:, : width // 2] = True
    return mask


def _options(**overrides):
    return resolve(
        "default",
        **{"seed": 7, "size": WIDTH, "iterations": 30, "precision": "float32", **overrides},
    )


def _picture(tiny, content, styles, regions, **overrides) -> Image.Image:
    records = list(run_job(tiny, content, styles, _options(**overrides), regions=regions))
    return records[-1].image


def _pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture, dtype=np.float64)


def _guided(net: FeatureNet, picture: Image.Image, mask: np.ndarray, layers) -> dict:
    """The Gram matrices of ``picture`` in ``mask``'s region, its guide area-averaged to each
    layer (the measure the issue names, apart from the engine's eroded guides)."""
    with torch.no_grad():
        features = net(to_tensor(picture, net.device), layers)
    region = torch.from_numpy(mask.astype(np.float32))[None, None]
    grams = {}
    for layer, f in features.items():
        weights = F.adaptive_avg_pool2d(region, f.shape[-2:]).square().flatten()
        grams[layer] = guided_gram(f, weights, float(weights.sum()), normalize=True)
    return grams


def _style_grams(net: FeatureNet, style: Image.Image, layers) -> dict:
    with torch.no_grad():
        features = net(to_tensor(style.resize((WIDTH, WIDTH)), net.device), layers)
    return {layer: gram(f, normalize=True) for layer, f in features.items()}


def test_each_region_takes_its_own_style(tiny, warm_style, cold_style) -> None:
    """Two halves, the warm and the cold style, and the same job with the styles swapped: in
    each half and at every style layer, the half's Gram matrix is nearer a style when the half
    was given that style than when it was given the other one. (The plainer "nearer its own
    style than the other's" does not hold on the untrained tiny network even without regions:
    its deep Gram matrices of the cold stripes lie far from every picture, so no 30-iteration
    job gets nearer them than the warm ones.)"""
    content = landscape(WIDTH, HEIGHT).convert("L").convert("RGB")
    left = _left()
    # More style than the default balance, so that 30 iterations go a long way.
    strong = {"style_strength": 1.0, "content_weight": 0.1}
    first = _picture(tiny, content, [warm_style, cold_style], [left, ~left], **strong)
    swapped = _picture(tiny, content, [cold_style, warm_style], [left, ~left], **strong)
    net = FeatureNet(tiny, "float32")
    layers = _options().style_layers
    warm, cold = _style_grams(net, warm_style, layers), _style_grams(net, cold_style, layers)
    for mask, given, other in ((left, warm, cold), (~left, cold, warm)):
        here, there = _guided(net, first, mask, layers), _guided(net, swapped, mask, layers)
        for layer in layers:
            assert (here[layer] - given[layer]).square().sum() < (
                there[layer] - given[layer]
            ).square().sum(), layer
            assert (there[layer] - other[layer]).square().sum() < (
                here[layer] - other[layer]
            ).square().sum(), layer


def test_the_keep_region_is_the_content(tiny, warm_style) -> None:
    """Pixels in no mask keep the content: exactly (0 levels of difference), while the styled
    region around them changed, and the content fades in over the border (8 pixels) outside."""
    content = landscape(WIDTH, HEIGHT)
    styled = np.ones((HEIGHT, WIDTH), bool)
    styled[8:24, 60:84] = False  # a 24x16 window kept
    picture = _pixels(_picture(tiny, content, [warm_style], [styled]))
    original = _pixels(content.resize((WIDTH, HEIGHT)))
    difference = np.abs(picture - original).mean(axis=-1)
    assert difference[~styled].max() == 0
    assert difference[:, :40].mean() > 10  # the style did paint its region
    # Beside the window, the content's share falls from 1 to 0 over the border.
    share = keep_weight([styled], 8.0, torch.device("cpu"))[0, 0].numpy()
    assert share[16, 84] > 0.8 and 0 < share[16, 88] < 1 and share[16, 93] == 0


def test_no_style_reaches_past_the_border(tiny) -> None:
    """The right half's style terms have no gradient on any pixel more than region_border (8)
    output pixels left of its edge: its guides keep only the cells whose receptive fields end
    within the border. 192 pixels, so that even block5_conv1 has such cells."""
    width = 192
    options = _options(size=width)
    net = FeatureNet(tiny, "float32")
    right = ~_left(width)
    (guides,) = stage_guides(
        [right], (width, HEIGHT), options.region_border, net.arch, options.style_layers, net.device
    )
    assert all(bool(g[0, 0, 0, :-1].eq(0).any()) for g in guides.values())  # no fallback
    cold = stripes(width, width, ((20, 60, 250), (10, 10, 60), (200, 230, 255)))
    targets = style_targets(
        net, options.style_layers, options.loss_normalization, [to_tensor(cold, net.device)], ()
    )
    content = to_tensor(landscape(width, HEIGHT), net.device)
    objective = Objective(
        net, Weights.from_options(options), content, parts=[StylePart(targets, guides, 0.5)]
    )
    pixels = content.clone().requires_grad_(True)
    _, terms = objective(pixels)
    (gradient,) = torch.autograd.grad(terms[1], pixels)
    by_column = gradient.abs().sum(dim=(0, 1, 2))
    edge = width // 2
    assert by_column[: edge - int(options.region_border)].max() == 0
    assert by_column[edge:].min() > 0


def test_another_style_in_one_half_barely_moves_the_other(tiny, warm_style, cold_style) -> None:
    """The right half painted cold, then warm: beyond the border, the left half moves less
    than a quarter as much as the right one (measured: a seventh). Adam steps each pixel by its
    own gradient; L-BFGS shares one step length and curvature over the whole picture, so
    under it every pixel moves when any part of the loss changes (measured: two fifths),
    which is the optimiser and not a style crossing the border."""
    width = 192
    content = landscape(width, HEIGHT)
    left = _left(width)
    runs = [
        _pixels(
            _picture(
                tiny,
                content,
                [warm_style, right],
                [left, ~left],
                size=width,
                optimizer="adam",
                scales=(1.0,),
            )
        )
        for right in (cold_style, warm_style)
    ]
    moved = np.abs(runs[0] - runs[1]).mean(axis=-1)
    border = int(_options().region_border)
    near, far = moved[:, width // 2 + border :].mean(), moved[:, : width // 2 - border].mean()
    assert far < 0.25 * near, (far, near)


@pytest.mark.parametrize("normalization", LOSS_NORMALIZATIONS)
def test_one_mask_of_the_whole_picture_is_no_regions(tiny, warm_style, normalization) -> None:
    """Guides of 1 everywhere, a share of 1: the same objective to the last bit, so the same
    pixels (float32, the same seed), under every normalisation (the default's strength too)."""
    content = landscape(WIDTH, HEIGHT)
    whole = [np.ones((HEIGHT, WIDTH), bool)]
    plain = _picture(tiny, content, [warm_style], None, loss_normalization=normalization)
    masked = _picture(tiny, content, [warm_style], whole, loss_normalization=normalization)
    np.testing.assert_array_equal(_pixels(plain), _pixels(masked))


def test_guides_never_vanish(tiny) -> None:
    """A region one pixel wide keeps a guide at every layer, a cell's share where no cell lies
    wholly in it; a full mask's guides are 1 everywhere."""
    thin = np.zeros((HEIGHT, WIDTH), bool)
    thin[:, 40] = True
    full = np.ones((HEIGHT, WIDTH), bool)
    layers = _options().style_layers
    thin_guides, full_guides = stage_guides(
        [thin, full], (WIDTH, HEIGHT), 8.0, "vgg16", layers, torch.device("cpu")
    )
    assert all(float(g.sum()) > 0 for g in thin_guides.values())
    assert all(bool(g.eq(1).all()) for g in full_guides.values())
