"""The optimisation's style strength and the ``relative`` normalisation, on the tiny network.

Strength moves each style layer's target from the content's own Gram matrix towards the
style's; ``relative`` divides each layer's term by the content's distance to the style there.
So at the content picture the style term is ``style_weight * strength**2`` whatever the style,
and a stronger strength closes more of the gap (measured as the quality benchmark does).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from styleserve.options import StyleOptions, resolve
from styleserve.plan import fit_longest_side
from styleserve_export.artifact import Backbone
from styleserve_server.engine import run_job
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import resize, to_tensor
from styleserve_server.engine.losses import gram
from styleserve_server.engine.objective import Objective, Weights

from tests.server.engine.engine_pictures import stripes

DEEP = "block5_conv1"


def _options(**changes: object) -> StyleOptions:
    return resolve(
        "default", size=64, iterations=30, scales=[1.0], precision="float32", seed=0, **changes
    )


def _closed(backbone: Backbone, result: Image.Image, content: Image.Image, style: Image.Image):
    """The share of the content's squared Gram distance to the style that ``result`` closed at
    the deepest style layer, the style sized as the job sized it."""
    net = FeatureNet(backbone, "float32")
    shaped = resize(content, result.size, "antialias")
    styled = resize(style, fit_longest_side(style.size, max(result.size)), "antialias")
    with torch.no_grad():
        mine, own, theirs = (
            gram(net(to_tensor(p, backbone.device), (DEEP,))[DEEP], normalize=True)
            for p in (result, shaped, styled)
        )
    return 1.0 - float((mine - theirs).square().sum() / (own - theirs).square().sum())


def _picture(backbone: Backbone, content: Image.Image, style: Image.Image, **changes: object):
    *_, finished = run_job(backbone, content, [style], _options(**changes))
    return finished.image


@pytest.mark.parametrize("style_name", ["warm_style", "cold_style"])
def test_a_stronger_strength_closes_more_of_the_deep_gap(
    tiny: Backbone, content: Image.Image, style_name: str, request: pytest.FixtureRequest
) -> None:
    style = request.getfixturevalue(style_name)
    closed = [
        _closed(tiny, _picture(tiny, content, style, style_strength=s), content, style)
        for s in (0.25, 0.5, 0.75, 1.0)
    ]
    assert all(a < b for a, b in zip(closed, closed[1:], strict=False)), closed
    assert closed[0] > 0.05, closed


def test_strength_zero_keeps_the_content(
    tiny: Backbone, content: Image.Image, warm_style: Image.Image
) -> None:
    # Its targets are the content's own Gram matrices: the content is already optimal.
    picture = _picture(tiny, content, warm_style, style_strength=0.0, tv_weight=0.0)
    expected = to_tensor(resize(content, picture.size, "antialias"), tiny.device)
    assert float((to_tensor(picture, tiny.device) - expected).abs().max()) <= 1.0


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_relative_style_term_at_the_content_is_the_same_on_every_style(
    tiny: Backbone, content: Image.Image, warm_style: Image.Image, strength: float
) -> None:
    options = _options(style_strength=strength, style_weight=7.0, tv_weight=0.0)
    net = FeatureNet(tiny, "float32")
    pixels = to_tensor(content, tiny.device)
    greys = stripes(40, 40, ((0, 0, 0), (128, 128, 128), (255, 255, 255)))
    for style in (warm_style, greys):
        objective = Objective(
            net, Weights.from_options(options), pixels, [to_tensor(style, tiny.device)]
        )
        with torch.no_grad():
            _, (content_term, style_term, _) = objective(pixels)
        assert float(content_term) == 0.0
        assert float(style_term) == pytest.approx(7.0 * strength**2, rel=1e-4)
