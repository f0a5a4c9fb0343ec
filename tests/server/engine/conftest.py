"""The engine tests' tiny backbone and synthetic pictures (no artifact, no files)."""

from __future__ import annotations

import pytest
from PIL import Image
from styleserve_export.artifact import Backbone
from styleserve_export.loader import tiny_backbone

from tests.server.engine.engine_pictures import landscape, stripes


@pytest.fixture(scope="session")
def tiny() -> Backbone:
    """The interfaces' test network: VGG16's shape with 1/16 of the channels, seeded weights."""
    return tiny_backbone("cpu")


@pytest.fixture
def content() -> Image.Image:
    return landscape(48, 32)


@pytest.fixture
def warm_style() -> Image.Image:
    return stripes(40, 40, ((250, 60, 20), (250, 200, 30), (120, 20, 10)))


@pytest.fixture
def cold_style() -> Image.Image:
    return stripes(40, 40, ((20, 60, 250), (10, 10, 60), (200, 230, 255)))
