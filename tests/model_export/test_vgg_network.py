"""The network definition: Keras semantics, early stop, shared truncation, torchvision layout."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from styleserve_export.state_dicts import from_torchvision
from styleserve_export.vgg import VGGFeatures

LAYERS_16 = ("block1_conv1", "block3_conv2", "block4_conv2", "block5_conv1")


def _input(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 60


def test_layer_names_and_shapes():
    net = VGGFeatures("vgg19", channel_divisor=16)
    assert len(net.layer_names) == 16 and net.layer_names[-1] == "block5_conv4"
    out = net(_input(), ["block1_conv2", "block3_conv4", "block5_conv4"])
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "block1_conv2": (2, 4, 32, 32),
        "block3_conv4": (2, 16, 8, 8),
        "block5_conv4": (2, 32, 2, 2),
    }


def test_activations_are_post_relu_and_deterministic():
    a = VGGFeatures("vgg16", channel_divisor=16)(_input(), LAYERS_16)
    b = VGGFeatures("vgg16", channel_divisor=16)(_input(), LAYERS_16)
    for layer in LAYERS_16:
        assert a[layer].min() >= 0 and a[layer].max() > 0
        assert torch.equal(a[layer], b[layer])


def test_stops_after_the_deepest_requested_layer():
    net = VGGFeatures("vgg16", channel_divisor=16)
    ran: list[str] = []
    for name in net.layer_names:
        net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    net(_input(), ["block2_conv1", "block1_conv1"])
    assert ran == ["block1_conv1", "block1_conv2", "block2_conv1"]


def test_unknown_layer_names_the_choices():
    with pytest.raises(KeyError, match="block1_conv1"):
        VGGFeatures("vgg16", channel_divisor=16)(_input(), ["block3_conv4"])


def test_torchvision_weights_give_torchvision_activations(torchvision_net):
    net = VGGFeatures("vgg16", channel_divisor=16)
    tv_state = {f"features.{k}": v for k, v in torchvision_net.state_dict().items()}
    net.load_state_dict(from_torchvision(tv_state, "vgg16"))
    x = _input()
    with torch.no_grad():
        expected = torchvision_net[:30](x)  # up to and including block5_conv3's ReLU
        got = net(x, ["block5_conv3"])["block5_conv3"]
    torch.testing.assert_close(got, expected)


def test_safe_from_several_threads():
    net = VGGFeatures("vgg16", channel_divisor=16).eval().requires_grad_(False)
    inputs = [
        torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(8)
    ]
    alone = [net(x, ["block5_conv3"])["block5_conv3"] for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda x: net(x, ["block5_conv3"])["block5_conv3"], inputs))
    for a, b in zip(alone, together, strict=True):
        assert torch.equal(a, b)


def test_bad_arch_and_divisor_are_refused():
    with pytest.raises(ValueError, match="vgg16"):
        VGGFeatures("vgg11")
    with pytest.raises(ValueError, match="divide"):
        VGGFeatures("vgg16", channel_divisor=3)
