"""Loads an exported backbone for the server, refusing anything it cannot trust.

The server never converts or downloads weights: it only reads the safetensors artifact that
``styleserve-export`` wrote and checked, after checking the artifact's hash against its
manifest. Every refusal is an ``ArtifactError`` whose message names the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from styleserve_export.vgg import VGGFeatures

__all__ = [
    "KERAS_NORMALIZATION",
    "MANIFEST_FILE",
    "TINY_BACKBONE",
    "TORCHVISION_NORMALIZATION",
    "WEIGHTS_FILE",
    "FORMAT_VERSION",
    "ArtifactError",
    "Backbone",
    "Normalization",
    "artifact_dir",
    "default_cache_dir",
    "export_command",
    "file_sha256",
    "load_backbone",
    "read_manifest",
    "tiny_backbone",
]

FORMAT_VERSION = 1  # of the manifest and file layout; a change makes old artifacts rebuild
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
# Built, never loaded: VGG16's shape with 1/16 of the channels and fixed random weights. It runs
# the whole service in a second without an artifact, for tests and smoke checks.
TINY_BACKBONE = "tiny-vgg16"


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


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or does not match its manifest; the message says the fix."""


def default_cache_dir() -> Path:
    """``$STYLESERVE_CACHE_DIR`` when set, else the user's cache directory for styleserve."""
    override = os.environ.get("STYLESERVE_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("styleserve"))


def artifact_dir(cache_dir: Path, backbone: str) -> Path:
    return cache_dir / backbone


def export_command(backbone: str, cache_dir: Path, *, force: bool = False) -> str:
    """The command line that (re)builds ``backbone`` in ``cache_dir``."""
    command = f"styleserve-export --source {backbone}"
    if cache_dir.resolve() != default_cache_dir().resolve():
        command += f" --cache-dir {cache_dir}"
    return command + (" --force" if force else "")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(backbone: str, cache_dir: Path) -> dict[str, Any]:
    """The manifest of ``backbone``'s artifact, after checking the weights' hash against it."""
    directory = artifact_dir(cache_dir, backbone)
    manifest_path, weights_path = directory / MANIFEST_FILE, directory / WEIGHTS_FILE
    if not manifest_path.is_file() or not weights_path.is_file():
        raise ArtifactError(
            f"no {backbone} artifact in {directory}: run `{export_command(backbone, cache_dir)}`"
        )
    rebuild = f"run `{export_command(backbone, cache_dir, force=True)}`"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = manifest["artifact"]["sha256"]
        if manifest["format"] != FORMAT_VERSION:
            raise ArtifactError(
                f"{directory} has artifact format {manifest['format']}, this version reads "
                f"{FORMAT_VERSION}: {rebuild}"
            )
        if manifest["backbone"] != backbone:
            raise ArtifactError(
                f"{directory} holds {manifest['backbone']!r}, not {backbone!r}: {rebuild}"
            )
    except (ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"unreadable manifest {manifest_path} ({err}): {rebuild}") from err
    actual = file_sha256(weights_path)
    if actual != expected:
        raise ArtifactError(
            f"{weights_path} has sha256 {actual}, its manifest says {expected} "
            f"(corrupt or modified): {rebuild}"
        )
    return manifest


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        # An explicit index, so that logs and replies name the GPU actually used ("cuda:0").
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def load_backbone(
    name: str = "keras-vgg16",
    *,
    cache_dir: Path | None = None,
    device: str | torch.device | None = None,
    up_to: str | None = None,
) -> Backbone:
    """Load ``name``'s verified artifact as an eval-mode, frozen network on ``device``.

    ``device`` None picks CUDA when present, else the CPU; ``up_to`` drops the layers after it.
    """
    if name == TINY_BACKBONE:
        return tiny_backbone(device)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    target = _resolve_device(device)
    manifest = read_manifest(name, cache_dir)
    rebuild = f"run `{export_command(name, cache_dir, force=True)}`"
    weights_path = artifact_dir(cache_dir, name) / WEIGHTS_FILE
    try:
        state = load_file(weights_path, device=str(target))
        # Built on the meta device: the real tensors are assigned below, so nothing is
        # initialised only to be thrown away.
        with torch.device("meta"):
            net = VGGFeatures(manifest["arch"], int(manifest.get("channel_divisor", 1)))
        net.load_state_dict(state, strict=True, assign=True)
        normalization = Normalization.from_json(manifest["normalization"])
    except (SafetensorError, RuntimeError, KeyError, ValueError, TypeError) as err:
        raise ArtifactError(f"cannot load {weights_path} ({err}): {rebuild}") from err
    if up_to is not None:
        net = net.truncated(up_to)
    net.eval().requires_grad_(False)
    return Backbone(
        name=name,
        arch=str(manifest["arch"]),
        net=net,
        normalization=normalization,
        sha256=str(manifest["artifact"]["sha256"]),
        device=target,
        manifest=manifest,
    )


def tiny_backbone(device: str | torch.device | None = None) -> Backbone:
    """The untrained ``tiny-vgg16`` network on ``device`` (None: CUDA when present, else CPU)."""
    target = _resolve_device(device)
    net = VGGFeatures("vgg16", channel_divisor=16).to(target).eval().requires_grad_(False)
    return Backbone(
        name=TINY_BACKBONE,
        arch="vgg16",
        net=net,
        normalization=KERAS_NORMALIZATION,
        sha256="",
        device=target,
        manifest={},
    )
