"""Published first values of the Keras/Caffe ImageNet VGG16 convolutions.

They identify the ImageNet weights inside the pinned ``keras-vgg16`` source: the source's
classifier head was retrained, and this check proves its convolutional base was not. Values are
bias[0] and weight[0,0,0,0] (layout Cout,Cin,kH,kW) of each layer, as published with the Keras
VGG16 weights (keras.applications, MIT licence; originally the Caffe VGG16 model by K. Simonyan
and A. Zisserman, CC BY 4.0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from styleserve_export.errors import ExportError

__all__ = ["KERAS_VGG16_FIRST_VALUES", "check_published"]

KERAS_VGG16_FIRST_VALUES: dict[str, tuple[float, float]] = {
    "block1_conv1": (0.73429835, 0.42947057),
    "block1_conv2": (-0.30912212, 0.16621928),
    "block2_conv1": (-0.04577766, -0.008902963),
    "block2_conv2": (-0.06418542, -0.0023012366),
    "block3_conv1": (-0.074358866, 0.002486315),
    "block3_conv2": (0.019675018, -0.0103266295),
    "block3_conv3": (0.035415243, 0.0024918285),
    "block4_conv1": (0.013485669, -0.012453815),
    "block4_conv2": (0.023680462, 0.007116542),
    "block4_conv3": (0.03757768, -0.0041355654),
    "block5_conv1": (0.09722325, -0.0006068934),
    "block5_conv2": (0.21327873, -0.0011261065),
    "block5_conv3": (0.18837857, 0.00040788297),
}


def check_published(state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Raise unless every layer's first bias and weight equal the published values."""
    wrong = []
    for layer, (bias, weight) in KERAS_VGG16_FIRST_VALUES.items():
        got = (float(state[f"{layer}.bias"][0]), float(state[f"{layer}.weight"][0, 0, 0, 0]))
        if not all(
            math.isclose(g, w, rel_tol=1e-6) for g, w in zip(got, (bias, weight), strict=True)
        ):
            wrong.append(f"{layer} {got} != {(bias, weight)}")
    if wrong:
        raise ExportError(
            f"{origin} does not hold the ImageNet VGG16 weights ({'; '.join(wrong[:2])}): "
            "the source changed; report it, or export another source (styleserve-export --list)"
        )
