"""``file:PATH`` sources: each format a user may bring, and files that are not weights."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from safetensors.torch import save_file
from styleserve_export.artifact import KERAS_NORMALIZATION, TORCHVISION_NORMALIZATION, file_sha256
from styleserve_export.errors import ExportError
from styleserve_export.export import export
from styleserve_export.loader import load_backbone
from styleserve_export.sources import resolve_source


def _same_network(backbone_net, reference, size: int = 32) -> None:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3)) * 100
    with torch.no_grad():
        torch.testing.assert_close(backbone_net(x, ["block5_conv3"])["block5_conv3"], reference(x))


def test_safetensors_with_block_names_is_keras(tiny_safetensors, tiny_net, tmp_path):
    result = export(resolve_source(f"file:{tiny_safetensors}"), tmp_path / "cache")
    assert result.backbone == "keras-vgg16" and result.parity is None
    backbone = load_backbone(cache_dir=tmp_path / "cache", device="cpu")
    assert backbone.normalization == KERAS_NORMALIZATION
    assert backbone.manifest["channel_divisor"] == 16
    assert backbone.manifest["source"] == {
        "name": f"file:{tiny_safetensors}",
        "sha256": file_sha256(tiny_safetensors),
        "origin": str(tiny_safetensors),
    }
    _same_network(backbone.net, lambda x: tiny_net(x, ["block5_conv3"])["block5_conv3"])


def test_pth_with_torchvision_keys_is_torchvision(tiny_pth, torchvision_net, tmp_path):
    result = export(resolve_source(f"file:{tiny_pth}"), tmp_path)
    assert result.backbone == "torchvision-vgg16"
    backbone = load_backbone("torchvision-vgg16", cache_dir=tmp_path, device="cpu")
    assert backbone.normalization == TORCHVISION_NORMALIZATION
    _same_network(backbone.net, torchvision_net[:30])


def test_zip_format_pth(torchvision_net, tmp_path):
    state = {f"features.{k}": v for k, v in torchvision_net.state_dict().items()}
    torch.save(state, tmp_path / "modern.pth")
    export(resolve_source(f"file:{tmp_path / 'modern.pth'}"), tmp_path / "cache")
    backbone = load_backbone("torchvision-vgg16", cache_dir=tmp_path / "cache", device="cpu")
    _same_network(backbone.net, torchvision_net[:30])


def test_keras_onnx_is_checked_against_onnxruntime(tiny_onnx, tiny_net, tmp_path):
    result = export(resolve_source(f"file:{tiny_onnx}"), tmp_path)
    assert result.backbone == "keras-vgg16"
    assert result.parity is not None and result.parity < 1e-5
    backbone = load_backbone(cache_dir=tmp_path, device="cpu")
    _same_network(backbone.net, lambda x: tiny_net(x, ["block5_conv3"])["block5_conv3"])


def test_onnx_with_a_wrong_graph_fails_parity(tiny_onnx_model, tmp_path):
    model = tiny_onnx_model
    for node in model.graph.node:  # swap to a 1-pixel shift: weights still load fine
        if node.op_type == "Conv" and "block3_conv2" in node.name:
            node.attribute[0].ints[:] = [2, 2, 0, 0]
    path = tmp_path / "shifted.onnx"
    onnx.save(model, path)
    with pytest.raises(ExportError, match=r"differs from .* \(limit 1e-04\)"):
        export(resolve_source(f"file:{path}"), tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["export.lock"]


def test_onnx_that_onnxruntime_cannot_run_is_refused(tiny_onnx_model, tmp_path):
    tiny_onnx_model.ir_version = 99
    onnx.save(tiny_onnx_model, tmp_path / "future.onnx")
    with pytest.raises(ExportError, match="onnxruntime cannot run"):
        export(resolve_source(f"file:{tmp_path / 'future.onnx'}"), tmp_path / "cache")


def test_own_artifact_round_trips_with_its_backbone(tiny_pth, tmp_path):
    export(resolve_source(f"file:{tiny_pth}"), tmp_path / "a")
    artifact = tmp_path / "a" / "torchvision-vgg16" / "model.safetensors"
    result = export(resolve_source(f"file:{artifact}"), tmp_path / "b")
    assert result.backbone == "torchvision-vgg16"  # from the artifact's safetensors metadata
    a, b = (
        load_backbone("torchvision-vgg16", cache_dir=tmp_path / cache, device="cpu")
        for cache in ("a", "b")
    )
    assert b.manifest["source"]["sha256"] == file_sha256(artifact)
    for key, tensor in a.net.state_dict().items():
        assert torch.equal(tensor, b.net.state_dict()[key])


def test_backbone_override_and_its_limits(tiny_safetensors, tmp_path):
    result = export(resolve_source(f"file:{tiny_safetensors}", "torchvision-vgg16"), tmp_path)
    assert result.backbone == "torchvision-vgg16"
    with pytest.raises(ExportError, match="vgg16 and cannot become backbone 'torchvision-vgg19'"):
        export(resolve_source(f"file:{tiny_safetensors}", "torchvision-vgg19"), tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("garbage.pth", b"\x00not a pickle" * 10, "not a readable torch state dict"),
        ("garbage.safetensors", b"\xff" * 64, "not a readable safetensors file"),
        ("garbage.onnx", b"\x0a\xff\xff\xff" * 8, "not a readable ONNX model"),
        ("weights.h5", b"HDF", "unknown weight format '.h5'"),
    ],
)
def test_foreign_files_are_refused(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ExportError, match=message):
        export(resolve_source(f"file:{path}"), tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["export.lock"]


def test_wrong_shapes_are_refused(tiny_net, tmp_path):
    state = tiny_net.state_dict()
    state["block4_conv1.weight"] = torch.zeros(32, 16, 1, 1)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(ExportError, match=r"block4_conv1.weight \(32, 16, 1, 1\)"):
        export(resolve_source(f"file:{tmp_path / 'bad.safetensors'}"), tmp_path / "cache")


def test_not_a_vgg_is_refused(tmp_path):
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "one.pth")
    with pytest.raises(ExportError, match="has 1 VGG convolution weights, expected 13"):
        export(resolve_source(f"file:{tmp_path / 'one.pth'}"), tmp_path / "cache")


def test_missing_file(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export(resolve_source(f"file:{tmp_path / 'nope.pth'}"), tmp_path / "cache")


def test_manifest_is_json_with_the_tool_version(tiny_pth, tmp_path):
    export(resolve_source(f"file:{tiny_pth}"), tmp_path)
    manifest = json.loads(Path(tmp_path / "torchvision-vgg16" / "manifest.json").read_text())
    assert manifest["tool"]["name"] == "styleserve-export" and manifest["tool"]["version"]
    assert manifest["artifact"]["sha256"] == file_sha256(
        tmp_path / "torchvision-vgg16" / "model.safetensors"
    )
