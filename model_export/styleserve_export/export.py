"""Writes a converted backbone into the cache as a verified artifact, atomically and once.

The artifact is staged in a temporary directory inside the cache, verified there (parity with
the source, then a round trip through the server's own loader) and only then renamed into
place, under a file lock, so a failed or concurrent export never leaves a half-written one.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors.torch import save

from styleserve_export.errors import ExportError
from styleserve_export.keras_onnx import PARITY_LIMIT
from styleserve_export.loader import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    artifact_dir,
    load_backbone,
    read_manifest,
)
from styleserve_export.sources import NORMALIZATIONS, Converted, Source
from styleserve_export.vgg import VGGFeatures, conv_shapes

__all__ = ["ExportResult", "export"]

_LOCK_FILE = "export.lock"
_STAGING_PREFIX = ".staging-"
_DOWNLOADS = "downloads"


@dataclass(frozen=True)
class ExportResult:
    backbone: str
    source: str
    weights: Path
    sha256: str
    layers: int
    parity: float | None  # max abs error / max abs activation against the source's runtime
    skipped: bool  # a valid artifact was already there

    def line(self) -> str:
        """The one line the CLI prints."""
        if self.skipped:
            return (
                f"{self.backbone}: valid artifact already at {self.weights} (sha256 {self.sha256}, "
                f"from {self.source}); nothing to do (--force rebuilds)"
            )
        parity = "n/a (hash and shapes checked)" if self.parity is None else f"{self.parity:.2e}"
        return (
            f"source {self.source} -> backbone {self.backbone}: {self.layers} layers, "
            f"{self.weights}, sha256 {self.sha256}, parity {parity}"
        )


def _result(manifest: dict[str, Any], weights: Path, skipped: bool) -> ExportResult:
    return ExportResult(
        backbone=manifest["backbone"],
        source=manifest["source"]["name"],
        weights=weights,
        sha256=manifest["artifact"]["sha256"],
        layers=len(manifest["layers"]),
        parity=manifest["verification"]["parity"],
        skipped=skipped,
    )


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _check_parity(converted: Converted) -> float | None:
    if converted.parity is None:
        return None
    net = VGGFeatures(converted.arch, converted.channel_divisor)
    net.load_state_dict(converted.state, strict=True)
    figure = converted.parity(net.eval())
    if not figure < PARITY_LIMIT:
        raise ExportError(
            f"converted {converted.backbone} differs from {converted.origin} by {figure:.2e} "
            f"(limit {PARITY_LIMIT:.0e}): it is not a plain Keras VGG (padding, pooling or layer "
            "order differ); give a Keras-layout VGG ONNX file"
        )
    return figure


def _write(converted: Converted, parity: float | None, directory: Path) -> dict[str, Any]:
    directory.mkdir()
    weights = directory / WEIGHTS_FILE
    tensors = {k: v.to(torch.float32).contiguous() for k, v in converted.state.items()}
    # Serialised in memory and written here, so a full disk surfaces as an OSError with errno;
    # the manifest hashes these bytes rather than reading the file back.
    data = save(tensors, metadata={"backbone": converted.backbone, "arch": converted.arch})
    _write_durably(weights, data)
    manifest = {
        "format": FORMAT_VERSION,
        "backbone": converted.backbone,
        "arch": converted.arch,
        "channel_divisor": converted.channel_divisor,
        "layers": [
            {"name": name, "weight": list(weight), "bias": list(bias)}
            for name, (weight, bias) in conv_shapes(
                converted.arch, converted.channel_divisor
            ).items()
        ],
        "normalization": NORMALIZATIONS[converted.backbone].to_json(),
        "source": {
            "name": converted.source,
            "sha256": converted.source_sha256,
            "origin": converted.origin,
        },
        "artifact": {
            "file": WEIGHTS_FILE,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        },
        "verification": {"checks": list(converted.checks), "parity": parity},
        "tool": {"name": "styleserve-export", "version": importlib.metadata.version("styleserve")},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_durably(directory / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _install(staged: Path, final: Path, trash: Path) -> None:
    """Rename ``staged`` to ``final``; an old artifact is moved into ``trash`` first."""
    if final.exists():
        os.replace(final, trash)
    os.replace(staged, final)


def _build(source: Source, backbone: str, cache_dir: Path, staging: Path) -> dict[str, Any]:
    converted = source.convert(staging, cache_dir / _DOWNLOADS)
    parity = _check_parity(converted)
    staged_cache = staging / "cache"
    staged_cache.mkdir()
    staged = artifact_dir(staged_cache, backbone)
    manifest = _write(converted, parity, staged)
    # The server's own loader must accept it before anyone else can see it.
    load_backbone(backbone, cache_dir=staged_cache, device="cpu")
    _install(staged, artifact_dir(cache_dir, backbone), staging / "old")
    return manifest


def export(source: Source, cache_dir: Path, *, force: bool = False) -> ExportResult:
    """Export ``source`` into ``cache_dir`` unless a valid artifact is already there."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(cache_dir / _LOCK_FILE):
            # Under the lock, staging directories can only be left over from a killed export.
            for stale in cache_dir.glob(f"{_STAGING_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
            backbone = source.backbone
            weights = artifact_dir(cache_dir, backbone) / WEIGHTS_FILE
            if not force:
                try:
                    return _result(read_manifest(backbone, cache_dir), weights, skipped=True)
                except ArtifactError:
                    pass  # missing or damaged: build it
            staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=cache_dir))
            try:
                manifest = _build(source, backbone, cache_dir, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return _result(manifest, weights, skipped=False)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            fix = "free disk space or choose another --cache-dir"
        else:
            fix = "check the path and its permissions, or choose another --cache-dir"
        raise ExportError(f"cannot write to {cache_dir} ({err.strerror or err}): {fix}") from err
