"""Loads exported artifacts for the server, refusing anything it cannot trust.

The server never converts or downloads weights: it only reads what ``styleserve-export`` wrote
and checked (a backbone's safetensors file, or the feed-forward tier's pair of ONNX graphs),
after checking every file's hash against the artifact's manifest. Every refusal is an
``ArtifactError`` whose message names the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from styleserve_export.vgg import VGGFeatures

__all__ = [
    "BACKBONE_KIND",
    "FEED_FORWARD_KIND",
    "KERAS_NORMALIZATION",
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
    "artifact_dir",
    "default_cache_dir",
    "export_command",
    "file_sha256",
    "load_backbone",
    "load_feed_forward",
    "pair_digest",
    "read_feed_forward_manifest",
    "read_manifest",
    "tiny_backbone",
]

FORMAT_VERSION = 1  # of the manifest and file layout; a change makes old artifacts rebuild
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
# Built, never loaded: VGG16's shape with 1/16 of the channels and fixed random weights. It runs
# the whole service in a second without an artifact, for tests and smoke checks.
TINY_BACKBONE = "tiny-vgg16"
BACKBONE_KIND = "backbone"
# The instant tier: a style-prediction and a transform network run in onnxruntime.
FEED_FORWARD_KIND = "feed-forward"
PREDICT_FILE = "style_predict.onnx"
TRANSFORM_FILE = "style_transform.onnx"
# Built, never loaded, like TINY_BACKBONE: a pair with the real one's inputs, outputs and size
# behaviour and a few fixed weights, so the instant tier runs in tests without an artifact.
TINY_FEED_FORWARD = "tiny-arbitrary"


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


def _checked_manifest(
    name: str,
    cache_dir: Path,
    *,
    kind: str,
    files: Sequence[str],
    digests: Callable[[Mapping[str, Any]], Mapping[str, str]],
) -> dict[str, Any]:
    """The manifest of ``name``'s ``kind`` artifact, after checking each of ``files``' hashes.

    ``digests`` reads the expected sha256 of each file out of the manifest (the two kinds keep
    them in different places); the checks and their messages are the same for every kind.
    """
    directory = artifact_dir(cache_dir, name)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file() or not all((directory / f).is_file() for f in files):
        raise ArtifactError(
            f"no {name} artifact in {directory}: run `{export_command(name, cache_dir)}`"
        )
    rebuild = f"run `{export_command(name, cache_dir, force=True)}`"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest["format"] != FORMAT_VERSION:
            raise ArtifactError(
                f"{directory} has artifact format {manifest['format']}, this version reads "
                f"{FORMAT_VERSION}: {rebuild}"
            )
        # Backbone manifests predate kinds; theirs is implied.
        holds = manifest.get("kind", BACKBONE_KIND), manifest.get("name", manifest.get("backbone"))
        if holds != (kind, name):
            raise ArtifactError(
                f"{directory} holds the {holds[0]} artifact {holds[1]!r}, not the {kind} "
                f"artifact {name!r}: {rebuild}"
            )
        expected = {f: str(digests(manifest)[f]) for f in files}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ArtifactError(f"unreadable manifest {manifest_path} ({err}): {rebuild}") from err
    for file, digest in expected.items():
        actual = file_sha256(directory / file)
        if actual != digest:
            raise ArtifactError(
                f"{directory / file} has sha256 {actual}, its manifest says {digest} "
                f"(corrupt or modified): {rebuild}"
            )
    return manifest


def read_manifest(backbone: str, cache_dir: Path) -> dict[str, Any]:
    """The manifest of ``backbone``'s artifact, after checking the weights' hash against it."""
    return _checked_manifest(
        backbone,
        cache_dir,
        kind=BACKBONE_KIND,
        files=(WEIGHTS_FILE,),
        digests=lambda manifest: {WEIGHTS_FILE: manifest["artifact"]["sha256"]},
    )


def pair_digest(files: Mapping[str, str]) -> str:
    """sha256 of ``sha256sum``'s listing of ``files`` (name -> sha256) in name order.

    So an operator can recompute an artifact's digest in its directory with
    ``sha256sum style_predict.onnx style_transform.onnx | sha256sum``.
    """
    listing = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def _file_digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    files = manifest["files"]
    digests = {name: str(files[name]["sha256"]) for name in (PREDICT_FILE, TRANSFORM_FILE)}
    if pair_digest(digests) != manifest["artifact"]["sha256"]:
        raise ValueError("the artifact's sha256 is not the digest of its files' hashes")
    return digests


def read_feed_forward_manifest(name: str, cache_dir: Path) -> dict[str, Any]:
    """The manifest of the feed-forward artifact ``name``, after checking both files' hashes."""
    return _checked_manifest(
        name,
        cache_dir,
        kind=FEED_FORWARD_KIND,
        files=(PREDICT_FILE, TRANSFORM_FILE),
        digests=_file_digests,
    )


def load_feed_forward(
    name: str = "magenta-arbitrary", *, cache_dir: Path | None = None
) -> FeedForwardArtifact:
    """The verified feed-forward pair ``name`` (``TINY_FEED_FORWARD``: the tiny stand-in)."""
    if name == TINY_FEED_FORWARD:
        # Imported here: building the stand-in needs onnx, which the backbone path never loads.
        from styleserve_export.feed_forward import tiny_pair

        return tiny_pair()
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    manifest = read_feed_forward_manifest(name, cache_dir)
    directory = artifact_dir(cache_dir, name)
    predict, transform = ((directory / f).read_bytes() for f in (PREDICT_FILE, TRANSFORM_FILE))
    return FeedForwardArtifact(
        name=name,
        sha256=str(manifest["artifact"]["sha256"]),
        predict=predict,
        transform=transform,
        manifest=manifest,
    )


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise RuntimeError(
            f"device {device} was asked for, but torch {torch.__version__} ({build}) sees no "
            "CUDA device (no GPU, no driver, or a CPU build of torch): start with --device "
            "cpu, or --device auto to use a GPU only when there is one"
        )
    if resolved.type == "cuda" and resolved.index is None:
        # An explicit index, so that logs and replies name the GPU actually used ("cuda:0").
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def load_backbone(
    name: str = "keras-vgg16",
    *,
    cache_dir: Path | None = None,
    device: str | torch.device | None = None,
) -> Backbone:
    """Load ``name``'s verified artifact as an eval-mode, frozen network on ``device``.

    ``device`` None picks CUDA when present, else the CPU.
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
