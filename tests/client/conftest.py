"""Pictures for the client tests, made with PIL so that no test depends on sample files."""

from pathlib import Path

import pytest
from PIL import Image

from tests.client.client_helpers import CONTENT_SIZE


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """A 64x32 gradient: wider than tall, to check that aspect ratios survive."""
    gradient = Image.linear_gradient("L").resize(CONTENT_SIZE)
    picture = Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_180), gradient)
    )
    path = tmp_path / "content.png"
    picture.save(path)
    return path


@pytest.fixture
def style(tmp_path: Path) -> Path:
    """Coloured noise, something for the Gram matrices to match."""
    noise = [Image.effect_noise((48, 48), sigma) for sigma in (40, 60, 80)]
    path = tmp_path / "style.jpg"
    Image.merge("RGB", noise).save(path, quality=90)
    return path
