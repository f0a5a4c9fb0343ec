"""The artifact format: file names, manifest kinds, and what a loaded artifact holds.

``styleserve-export`` writes this format and the loader reads it; it lives in a leaf module of
its own, importing no other part of the package but ``vgg``, so that both can import it
without importing each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

# The pair's names are choices of the server's feed_forward setting, like the backbones' of the
# backbone option: the client's options module holds them (the exported pair:
# ``sources.MAGENTA_ARBITRARY``; the tiny one is built, never loaded, like TINY_BACKBONE).
from styleserve.options import MAGENTA_FEED_FORWARD, TINY_FEED_FORWARD, TINY_VGG16

from styleserve_export.vgg import VGGFeatures

__all__ = [
    "BACKBONE_KIND",
    "FEED_FORWARD_KIND",
    "KERAS_NORMALIZATION",
    "MAGENTA_FEED_FORWARD",
    "MANIFEST_FILE",
    "PREDICT_FILE",
    "TINY_BACKBONE",
    "TINY_FEED_FORWARD",
    "TRANSFORM_FILE",
    "TORCHVISION_NORMALIZATION",
    "WEIGHTS_FILE",
    "FORMAT_VERSION",
    "ArtifactError",
    "Backbone",
    "FeedForwardArtifact",
    "Normalization",
    "file_sha256",
    "pair_digest",
]

FORMAT_VERSION = 1  # of the manifest and file layout; a change makes old artifacts rebuild
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
# Built, never loaded: VGG16's shape with 1/16 of the channels and fixed random weights. It runs
# the whole service in a second without an artifact, for tests and smoke checks. Its name is a
# choice of the backbone option, so the client's options module holds it.
TINY_BACKBONE = TINY_VGG16
BACKBONE_KIND = "backbone"
# The instant tier: a style-prediction and a transform network run in onnxruntime.
FEED_FORWARD_KIND = "feed-forward"
PREDICT_FILE = "style_predict.onnx"
TRANSFORM_FILE = "style_transform.onnx"


@dataclass(frozen=True)
class Normalization:
    """How pixels become network input: ``(rgb / 255 * scale, in channel_order) - mean) / std``."""

    channel_order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Normalization:
        return cls(
            channel_order=str(data["channel_order"]),
            scale=float(data["scale"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
        )


# Keras ``preprocess_input`` for VGG ("caffe" mode): BGR, 0-255, ImageNet mean, no scaling.
KERAS_NORMALIZATION = Normalization("BGR", 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
TORCHVISION_NORMALIZATION = Normalization("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Backbone:
    """A loaded feature extractor and everything needed to feed it correctly."""

    name: str
    arch: str
    net: VGGFeatures
    normalization: Normalization
    sha256: str
    device: torch.device
    manifest: Mapping[str, Any]


@dataclass(frozen=True)
class FeedForwardArtifact:
    """The feed-forward tier's two ONNX graphs, checked against their manifest.

    ``sha256`` identifies the pair (``pair_digest`` of the two files); ``manifest["contract"]``
    gives the graphs' input and output names, layouts, value ranges and sizes.
    """

    name: str
    sha256: str
    predict: bytes  # the style picture -> style vector graph
    transform: bytes  # content picture + style vector -> stylised picture
    manifest: Mapping[str, Any]


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or does not match its manifest; the message says the fix."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pair_digest(files: Mapping[str, str]) -> str:
    """sha256 of ``sha256sum``'s listing of ``files`` (name -> sha256) in name order.

    So an operator can recompute an artifact's digest in its directory with
    ``sha256sum style_predict.onnx style_transform.onnx | sha256sum``.
    """
    listing = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()
