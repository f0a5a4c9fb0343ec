"""Gets the one backbone a server serves ready: the exported artifact or the tiny test network.

The server never converts or downloads weights; it loads the artifact ``styleserve-export``
wrote (the loader's ArtifactError names that command when the artifact is missing). The tiny
network (``tiny-vgg16``: VGG16's shape with 1/16 of the channels, fixed random weights) lets
tests and smoke checks run the whole service in a second without any artifact.
"""

from __future__ import annotations

import logging

from PIL import Image
from styleserve.options import resolve
from styleserve_export.artifact import Backbone
from styleserve_export.loader import load_backbone

from styleserve_server.engine import PrecisionChoice, auto_precision, run_job
from styleserve_server.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["load", "warm_up"]


def load(settings: Settings) -> Backbone:
    """The backbone ``settings`` name, on ``settings.device``."""
    device = None if settings.device == "auto" else settings.device
    return load_backbone(settings.backbone, cache_dir=settings.cache_dir, device=device)


def warm_up(backbone: Backbone) -> PrecisionChoice:
    """Measures what ``precision="auto"`` means on this device (once per process: jobs that
    get no choice reuse it), then runs one tiny job in it so that the first real one does not
    pay for kernel selection, allocator growth and lazy initialisation (and so that a broken
    device fails here). Returns the choice."""
    choice = auto_precision(backbone)
    log.info(
        "precision measured",
        extra={
            "precision": choice.precision,
            "reason": choice.reason,
            "trials": {t.precision: round(t.seconds, 4) for t in choice.trials},
            "deviations": {t.precision: round(t.deviation, 5) for t in choice.trials},
        },
    )
    options = resolve("default", backbone=backbone.name, size=32, iterations=1, scales=[1.0])
    picture = Image.radial_gradient("L").convert("RGB").resize((32, 32))
    for _ in run_job(backbone, picture, [picture], options, precision=choice):
        pass
    return choice
