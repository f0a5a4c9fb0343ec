"""Gets the one backbone a server serves ready: the exported artifact or the tiny test network.

The server never converts or downloads weights; it loads the artifact ``styleserve-export``
wrote (the loader's ArtifactError names that command when the artifact is missing). The tiny
network (``tiny-vgg16``: VGG16's shape with 1/16 of the channels, fixed random weights) lets
tests and smoke checks run the whole service in a second without any artifact.
"""

from __future__ import annotations

import torch
from PIL import Image
from styleserve.options import BACKBONES, resolve
from styleserve_export.loader import KERAS_NORMALIZATION, Backbone, load_backbone
from styleserve_export.vgg import VGGFeatures

from styleserve_server.engine import run_job
from styleserve_server.settings import TINY_BACKBONE, Settings

__all__ = ["load", "tiny_backbone", "warm_up"]


def tiny_backbone(device: str | torch.device = "cpu") -> Backbone:
    """VGG16 with 1/16 of its channels and seeded weights: fast, artifact-free, untrained."""
    device = torch.device(device)
    net = VGGFeatures("vgg16", channel_divisor=16).to(device).eval().requires_grad_(False)
    return Backbone(
        name=TINY_BACKBONE,
        arch="vgg16",
        net=net,
        normalization=KERAS_NORMALIZATION,
        sha256="",
        device=device,
        manifest={},
    )


def load(settings: Settings) -> Backbone:
    """The backbone ``settings`` name, on ``settings.device``."""
    device = None if settings.device == "auto" else settings.device
    if settings.backbone == TINY_BACKBONE:
        return tiny_backbone(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return load_backbone(settings.backbone, cache_dir=settings.cache_dir, device=device)


def warm_up(backbone: Backbone) -> None:
    """Runs one tiny job so that the first real one does not pay for kernel selection,
    allocator growth and lazy initialisation (and so that a broken device fails here)."""
    served = {"backbone": backbone.name} if backbone.name in BACKBONES else {}
    options = resolve("default", size=32, iterations=1, scales=[1.0], **served)
    picture = Image.radial_gradient("L").convert("RGB").resize((32, 32))
    for _ in run_job(backbone, picture, [picture], options):
        pass
