"""Scores a delivered picture with the objective its job optimised, in float32."""

from __future__ import annotations

import io

import torch
from PIL import Image
from styleserve.options import StyleOptions
from styleserve_export.artifact import Backbone
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import to_tensor
from styleserve_server.engine.objective import Objective, Weights

__all__ = ["delivered", "score"]


def delivered(picture: Image.Image) -> Image.Image:
    """``picture`` as a caller gets it: encoded as PNG and decoded."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def score(
    backbone: Backbone,
    options: StyleOptions,
    content: Image.Image,
    style: Image.Image,
    picture: Image.Image,
) -> float:
    """The float32 loss of ``picture`` for the last stage of a job of ``options`` whose content
    and style pictures already have the output's size (so that its last stage resized neither)."""
    assert content.size == style.size == picture.size
    device = backbone.device
    objective = Objective(
        FeatureNet(backbone, "float32"),
        Weights.from_options(options),
        to_tensor(content, device),
        [to_tensor(style, device)],
        (),
    )
    with torch.no_grad():
        return objective(to_tensor(picture, device))[0].item()
