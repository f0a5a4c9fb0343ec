"""The engine tests' tiny backbone and synthetic pictures (no artifact, no files)."""

from __future__ import annotations

import pytest
import torch
from engine_pictures import landscape, stripes
from PIL import Image
from styleserve_export.loader import KERAS_NORMALIZATION, Backbone
from styleserve_export.vgg import VGGFeatures


@pytest.fixture(scope="session")
def tiny() -> Backbone:
    """The interfaces' test network: VGG16's shape with 1/16 of the channels, seeded weights."""
    net = VGGFeatures("vgg16", channel_divisor=16).eval().requires_grad_(False)
    return Backbone(
        name="tiny-vgg16",
        arch="vgg16",
        net=net,
        normalization=KERAS_NORMALIZATION,
        sha256="",
        device=torch.device("cpu"),
        manifest={},
    )


@pytest.fixture
def content() -> Image.Image:
    return landscape(48, 32)


@pytest.fixture
def warm_style() -> Image.Image:
    return stripes(40, 40, ((250, 60, 20), (250, 200, 30), (120, 20, 10)))


@pytest.fixture
def cold_style() -> Image.Image:
    return stripes(40, 40, ((20, 60, 250), (10, 10, 60), (200, 230, 255)))
