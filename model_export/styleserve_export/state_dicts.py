"""Turns foreign state dicts into the project's layer names and checks their shapes.

Weights arrive with torchvision's positional keys (``features.10.weight``) or already with
Keras block names; everything downstream only knows ``block{b}_conv{c}.weight/.bias``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from styleserve.options import VGG_LAYERS

from styleserve_export.errors import ExportError
from styleserve_export.vgg import BLOCK_CHANNELS, conv_shapes

__all__ = ["arch_of", "check_shapes", "from_torchvision", "is_torchvision", "torchvision_keys"]

_TORCHVISION_KEY = re.compile(r"features\.(\d+)\.(weight|bias)")
_BLOCK_KEY = re.compile(r"block\d+_conv\d+\.(weight|bias)")


def torchvision_keys(arch: str) -> dict[str, str]:
    """``{layer: "features.N"}``: torchvision's ``features`` interleaves conv, ReLU and pools."""
    index, block, keys = 0, 1, {}
    for layer in VGG_LAYERS[arch]:
        if not layer.startswith(f"block{block}_"):
            index += 1  # the max-pool that ends the previous block
            block += 1
        keys[layer] = f"features.{index}"
        index += 2  # the conv and its ReLU
    return keys


def is_torchvision(state: Mapping[str, object]) -> bool:
    return any(_TORCHVISION_KEY.fullmatch(key) for key in state)


def arch_of(state: Mapping[str, object], origin: str) -> str:
    """vgg16 or vgg19, from the number of convolution weights in ``state``."""
    pattern = _TORCHVISION_KEY if is_torchvision(state) else _BLOCK_KEY
    convs = sum(1 for key in state if pattern.fullmatch(key) and key.endswith(".weight"))
    for arch, layers in VGG_LAYERS.items():
        if convs == len(layers):
            return arch
    raise ExportError(
        f"{origin} has {convs} VGG convolution weights, expected 13 (VGG16) or 16 (VGG19): "
        "give a VGG16/VGG19 state dict with torchvision keys (features.N.weight) or block names"
    )


def from_torchvision(state: Mapping[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """The convolution tensors of a torchvision ``vgg16``/``vgg19`` state dict, by block name."""
    out = {}
    for layer, prefix in torchvision_keys(arch).items():
        for kind in ("weight", "bias"):
            out[f"{layer}.{kind}"] = state[f"{prefix}.{kind}"]
    return out


def check_shapes(
    state: Mapping[str, torch.Tensor], arch: str, origin: str, channel_divisor: int | None = None
) -> int:
    """Check ``state`` holds exactly ``arch``'s convolutions; returns its channel divisor.

    ``channel_divisor`` None accepts any divisor (read from the first layer), for local files.
    """
    first = state.get(f"{VGG_LAYERS[arch][0]}.weight")
    if channel_divisor is None and first is not None and first.ndim == 4 and first.shape[0]:
        channel_divisor = max(1, BLOCK_CHANNELS[0] // first.shape[0])
    expected = {}
    for layer, (weight, bias) in conv_shapes(arch, channel_divisor or 1).items():
        expected[f"{layer}.weight"], expected[f"{layer}.bias"] = weight, bias
    actual = {key: tuple(tensor.shape) for key, tensor in state.items()}
    wrong = [k for k in expected if actual.get(k) != expected[k]] + sorted(
        set(actual) - set(expected)
    )
    if wrong:
        detail = ", ".join(
            f"{k} {actual.get(k, 'missing')} (want {expected.get(k)})" for k in wrong[:3]
        )
        raise ExportError(
            f"{origin} is not a {arch} convolutional base: {detail}: "
            "check that the file is a VGG state dict of the chosen architecture"
        )
    return channel_divisor or 1
