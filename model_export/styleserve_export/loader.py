"""Loads exported artifacts for the server, refusing anything it cannot trust.

The server never converts or downloads weights: it only reads what ``styleserve-export`` wrote
and checked (a backbone's safetensors file, or the feed-forward tier's pair of ONNX graphs),
after checking every file's hash against the artifact's manifest. Every refusal is an
``ArtifactError`` whose message names the command that fixes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import platformdirs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from styleserve.options import KERAS_VGG16

from styleserve_export.artifact import (
    BACKBONE_KIND,
    FEED_FORWARD_KIND,
    FORMAT_VERSION,
    KERAS_NORMALIZATION,
    MAGENTA_FEED_FORWARD,
    MANIFEST_FILE,
    PREDICT_FILE,
    TINY_BACKBONE,
    TINY_FEED_FORWARD,
    TRANSFORM_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    Backbone,
    FeedForwardArtifact,
    Normalization,
    file_sha256,
    pair_digest,
)
from styleserve_export.feed_forward import tiny_pair
from styleserve_export.vgg import VGGFeatures

__all__ = [
    "artifact_dir",
    "default_cache_dir",
    "export_command",
    "load_backbone",
    "load_feed_forward",
    "read_feed_forward_manifest",
    "read_manifest",
    "tiny_backbone",
]


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
    name: str = MAGENTA_FEED_FORWARD, *, cache_dir: Path | None = None
) -> FeedForwardArtifact:
    """The verified feed-forward pair ``name`` (``TINY_FEED_FORWARD``: the tiny stand-in)."""
    if name == TINY_FEED_FORWARD:
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
    name: str = KERAS_VGG16,
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
