"""Each loss term: gradients by finite differences, values against numpy's tutorial formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from styleserve.options import OptionsError, resolve
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.losses import content_loss, gram, style_loss, total_variation
from styleserve_server.engine.objective import Objective, Weights
from styleserve_server.engine.optimize import Evaluator

from tests.server.engine.engine_pictures import landscape, stripes


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=torch.float64).requires_grad_(True)


def _gradcheck(fn, *inputs: torch.Tensor) -> None:
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mean", [False, True])
def test_content_loss_gradient(mean: bool) -> None:
    target = _random(1, 4, 5, 6, seed=1).detach()
    _gradcheck(lambda f: content_loss(f, target, mean=mean), _random(1, 4, 5, 6))


@pytest.mark.parametrize("normalize", [False, True])
def test_style_loss_gradient(normalize: bool) -> None:
    target = _random(4, 4, seed=1).detach()
    _gradcheck(
        lambda f: style_loss(gram(f, normalize=normalize), target, divisor=7.0),
        _random(1, 4, 3, 5),
    )


@pytest.mark.parametrize(
    ("power", "mean"), [(1.25, False), (1.25, True), (2.0, False), (0.5, True)]
)
def test_total_variation_gradient(power: float, mean: bool) -> None:
    pixels = _random(1, 3, 5, 6) * 10
    _gradcheck(
        lambda p: total_variation(p, power=power, mean=mean),
        pixels.detach().requires_grad_(),
    )


def test_total_variation_of_a_flat_picture_has_a_finite_gradient() -> None:
    pixels = torch.full((1, 3, 4, 4), 100.0, requires_grad=True)
    total_variation(pixels, power=0.5, mean=True).backward()
    assert torch.isfinite(pixels.grad).all()


def _np_gram(features: np.ndarray) -> np.ndarray:
    flat = features[0].reshape(features.shape[1], -1)
    return flat @ flat.T


@pytest.mark.parametrize("normalize", [False, True])
def test_gram_matches_numpy(normalize: bool) -> None:
    features = torch.randn(1, 5, 4, 3, generator=torch.Generator().manual_seed(0))
    expected = _np_gram(features.numpy().astype(np.float64))
    if normalize:
        expected /= 5 * 4 * 3
    np.testing.assert_allclose(gram(features, normalize=normalize).numpy(), expected, rtol=1e-5)


def test_gram_is_float32_for_bfloat16_features() -> None:
    assert (
        gram(torch.ones(1, 2, 3, 3, dtype=torch.bfloat16), normalize=False).dtype == torch.float32
    )


def test_gram_gradient_of_channels_last_bfloat16_features() -> None:
    """The bf16 network's path: its gradient matches float64 autograd and keeps the layout."""
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(1, 8, 6, 10, generator=generator, dtype=torch.float64)
    weight = torch.rand(8, 8, generator=generator, dtype=torch.float64)
    narrow = features.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    narrow.requires_grad_(True)
    # autograd.grad, unlike .grad of a leaf, hands back the layout the backward produced.
    (got,) = torch.autograd.grad((gram(narrow, normalize=True) * weight).sum(), narrow)
    exact = narrow.detach().double().requires_grad_(True)
    flat = exact[0].reshape(8, -1)
    (expected,) = torch.autograd.grad(((flat @ flat.T / exact.numel()) * weight).sum(), exact)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.double(), expected, rtol=2e-2, atol=1e-4)


def _tutorial_loss_numpy(net, content: np.ndarray, style: np.ndarray, combo: np.ndarray):
    """The Keras example's loss, written out in numpy from its text (features from ``net``)."""
    mean_bgr = np.array([103.939, 116.779, 123.68])

    def features(rgb: np.ndarray) -> dict[str, np.ndarray]:
        bgr = rgb[..., ::-1] - mean_bgr  # preprocess_input: RGB->BGR, minus the mean
        x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)[None], dtype=np.float32))
        layers = ("block4_conv2", *(f"block{b}_conv1" for b in range(1, 6)))
        return {k: v.double().numpy() for k, v in net(x, layers).items()}

    fc, fs, fx = features(content), features(style), features(combo)
    rows, cols = combo.shape[:2]
    content_term = 0.025 * np.sum((fx["block4_conv2"] - fc["block4_conv2"]) ** 2)
    style_term = 0.0
    for b in range(1, 6):
        layer = f"block{b}_conv1"
        s, c = _np_gram(fs[layer]), _np_gram(fx[layer])
        style_term += (1.0 / 5) * np.sum((s - c) ** 2) / (4.0 * 3**2 * (rows * cols) ** 2)
    a = (combo[: rows - 1, : cols - 1] - combo[1:, : cols - 1]) ** 2
    b = (combo[: rows - 1, : cols - 1] - combo[: rows - 1, 1:]) ** 2
    tv_term = np.sum((a + b) ** 1.25)
    return content_term, style_term, tv_term


def test_seed_objective_is_the_tutorial_formula(tiny) -> None:
    o = resolve("seed")
    content = np.asarray(landscape(40, 24), dtype=np.float64)
    style = np.asarray(stripes(40, 24, ((200, 30, 30), (30, 30, 200))), dtype=np.float64)
    combo = np.random.default_rng(0).uniform(0, 255, content.shape)

    weights = Weights.from_options(o)

    def tensor(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32))

    objective = Objective(
        FeatureNet(tiny, "float32"), weights, tensor(content), [tensor(style)], ()
    )
    total, terms = objective(tensor(combo))
    expected = _tutorial_loss_numpy(tiny.net, content, style, combo)
    np.testing.assert_allclose(terms.numpy(), expected, rtol=2e-4)
    assert total.item() == pytest.approx(sum(expected), rel=2e-4)


def test_a_loss_that_overflows_is_the_requests_fault_not_the_servers() -> None:
    """Whatever still overflows within the options' bounds ends as OptionsError (the service
    answers INVALID_ARGUMENT), before an optimiser divides by it."""
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    evaluator = Evaluator(lambda v, _: ((v + float("inf")).sum(), torch.zeros(3)))
    evaluator.bind(x, None)
    with pytest.raises(OptionsError, match="the loss overflowed"):
        evaluator()
