"""Writes a source into the cache as a verified artifact, atomically and once.

Two kinds of artifact: a converted VGG backbone, and the feed-forward tier's pair of ONNX
graphs. Either is staged in a temporary directory inside the cache, verified there (against
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, overload

import torch
from filelock import FileLock
from safetensors.torch import save

from styleserve_export.artifact import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    PREDICT_FILE,
    TRANSFORM_FILE,
    WEIGHTS_FILE,
    ArtifactError,
)
from styleserve_export.errors import ExportError
from styleserve_export.feed_forward import convert, pair_manifest
from styleserve_export.keras_onnx import PARITY_LIMIT
from styleserve_export.loader import (
    artifact_dir,
    load_backbone,
    load_feed_forward,
    read_feed_forward_manifest,
    read_manifest,
)
from styleserve_export.sources import (
    NORMALIZATIONS,
    Converted,
    FeedForwardSource,
    FeedForwardWheelSource,
    Source,
    WheelFileSource,
)
from styleserve_export.vgg import VGGFeatures, conv_shapes

__all__ = ["ExportResult", "FeedForwardResult", "export"]

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
            return _skipped_line(self.backbone, self.weights, self.sha256, self.source)
        parity = "n/a (hash and shapes checked)" if self.parity is None else f"{self.parity:.2e}"
        return (
            f"source {self.source} -> backbone {self.backbone}: {self.layers} layers, "
            f"{self.weights}, sha256 {self.sha256}, parity {parity}"
        )


@dataclass(frozen=True)
class FeedForwardResult:
    name: str
    source: str
    directory: Path  # holds both graphs and the manifest
    sha256: str  # the pair's digest (loader.pair_digest)
    transform_max_abs_diff: float  # exported vs source transform at the source's size
    skipped: bool  # a valid artifact was already there

    def line(self) -> str:
        """The one line the CLI prints."""
        if self.skipped:
            return _skipped_line(self.name, self.directory, self.sha256, self.source)
        return (
            f"source {self.source} -> feed-forward {self.name}: {PREDICT_FILE} + "
            f"{TRANSFORM_FILE} in {self.directory}, sha256 {self.sha256}, "
            f"transform max abs diff {self.transform_max_abs_diff:.2e}"
        )


def _skipped_line(name: str, where: Path, sha256: str, source: str) -> str:
    return (
        f"{name}: valid artifact already at {where} (sha256 {sha256}, from {source}); "
        "nothing to do (--force rebuilds)"
    )


def _result(manifest: dict[str, Any], directory: Path, skipped: bool) -> ExportResult:
    return ExportResult(
        backbone=manifest["backbone"],
        source=manifest["source"]["name"],
        weights=directory / WEIGHTS_FILE,
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
    }
    return _write_manifest(directory, manifest)


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Stamp ``manifest`` with the tool and the time and write it last, after the files."""
    manifest = {
        **manifest,
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


def _build_backbone(
    source: Source, backbone: str, workdir: Path, downloads: Path, staged: Path
) -> dict[str, Any]:
    converted = source.convert(workdir, downloads)
    parity = _check_parity(converted)
    manifest = _write(converted, parity, staged)
    # The server's own loader must accept it before anyone else can see it.
    load_backbone(backbone, cache_dir=staged.parent, device="cpu")
    return manifest


def _build_feed_forward(
    source: FeedForwardSource, name: str, workdir: Path, downloads: Path, staged: Path
) -> dict[str, Any]:
    pair = source.fetch(workdir, downloads)
    exported = convert(pair)
    staged.mkdir()
    _write_durably(staged / PREDICT_FILE, exported.predict)
    _write_durably(staged / TRANSFORM_FILE, exported.transform)
    manifest = {
        **pair_manifest(name, exported.predict, exported.transform),
        "source": pair.source,
        "licenses": pair.licenses,
        "verification": exported.verification,
    }
    manifest = _write_manifest(staged, manifest)
    load_feed_forward(name, cache_dir=staged.parent)  # as for a backbone
    return manifest


def _feed_forward_result(
    manifest: dict[str, Any], directory: Path, skipped: bool
) -> FeedForwardResult:
    return FeedForwardResult(
        name=manifest["name"],
        source=manifest["source"]["name"],
        directory=directory,
        sha256=manifest["artifact"]["sha256"],
        transform_max_abs_diff=manifest["verification"]["transform_max_abs_diff"],
        skipped=skipped,
    )


_S = TypeVar("_S")
_R = TypeVar("_R")


@dataclass(frozen=True)
class _Kind(Generic[_S, _R]):
    """What differs between artifact kinds; ``_export`` does the rest the same way for all."""

    name: Callable[[_S], str]  # the artifact's directory; may convert, so it runs under the lock
    read: Callable[[str, Path], dict[str, Any]]  # the installed manifest, or ArtifactError
    # (source, name, workdir, downloads, staged directory) -> manifest, written and verified
    build: Callable[[_S, str, Path, Path, Path], dict[str, Any]]
    result: Callable[[dict[str, Any], Path, bool], _R]  # (manifest, directory, skipped)


_BACKBONE: _Kind[Source, ExportResult] = _Kind(
    lambda source: source.backbone, read_manifest, _build_backbone, _result
)
_FEED_FORWARD: _Kind[FeedForwardSource, FeedForwardResult] = _Kind(
    lambda source: source.artifact,
    read_feed_forward_manifest,
    _build_feed_forward,
    _feed_forward_result,
)


def _export(kind: _Kind[_S, _R], source: _S, cache_dir: Path, force: bool) -> _R:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(cache_dir / _LOCK_FILE):
            # Under the lock, staging directories can only be left over from a killed export.
            for stale in cache_dir.glob(f"{_STAGING_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
            name = kind.name(source)
            final = artifact_dir(cache_dir, name)
            if not force:
                try:
                    return kind.result(kind.read(name, cache_dir), final, True)
                except ArtifactError:
                    pass  # missing or damaged: build it
            staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=cache_dir))
            try:
                # Staged inside a cache of its own, where the loader can check it as it stands.
                staged = artifact_dir(staging / "cache", name)
                staged.parent.mkdir()
                manifest = kind.build(source, name, staging, cache_dir / _DOWNLOADS, staged)
                _install(staged, final, staging / "old")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return kind.result(manifest, final, False)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            fix = "free disk space or choose another --cache-dir"
        else:
            fix = "check the path and its permissions, or choose another --cache-dir"
        raise ExportError(f"cannot write to {cache_dir} ({err.strerror or err}): {fix}") from err


@overload
def export(source: Source, cache_dir: Path, *, force: bool = False) -> ExportResult: ...


@overload
def export(
    source: FeedForwardSource, cache_dir: Path, *, force: bool = False
) -> FeedForwardResult: ...


@overload
def export(
    source: Source | FeedForwardSource, cache_dir: Path, *, force: bool = False
) -> ExportResult | FeedForwardResult: ...


def export(
    source: Source | FeedForwardSource, cache_dir: Path, *, force: bool = False
) -> ExportResult | FeedForwardResult:
    """Export ``source`` into ``cache_dir`` unless a valid artifact is already there."""
    if isinstance(source, FeedForwardWheelSource | WheelFileSource):
        return _export(_FEED_FORWARD, source, cache_dir, force)
    # The two classes above are the only FeedForwardSource implementations; mypy cannot rule
    # the protocol out of the union by isinstance on them, so say what is left is a Source.
    return _export(_BACKBONE, cast(Source, source), cache_dir, force)
