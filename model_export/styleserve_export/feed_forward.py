"""The instant tier's pair of ONNX graphs: their contract, the export's rewrite and checks.

Magenta's arbitrary stylisation (Ghiasi et al. 2017) is two networks: ``predict`` turns a
256x256 style picture into a 100-number style vector, ``transform`` renders a content picture
with a vector. The wheel's transform graph fixes its content size at 384x384; the export makes
height and width symbolic, proves on a fixed input that nothing else changed, and proves that
the result runs at another size. The tiny stand-in has the same contract, so servers in tests
run the instant tier without an artifact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from styleserve_export.artifact import (
    FEED_FORWARD_KIND,
    FORMAT_VERSION,
    PREDICT_FILE,
    TINY_FEED_FORWARD,
    TRANSFORM_FILE,
    FeedForwardArtifact,
    pair_digest,
)
from styleserve_export.errors import ExportError
from styleserve_export.keras_onnx import parse

__all__ = [
    "CONTENT_INPUT",
    "OUTPUT",
    "SIZE_MULTIPLE",
    "STYLE_INPUT",
    "STYLE_SIZE",
    "TRANSFORM_LIMIT",
    "VECTOR",
    "VECTOR_SIZE",
    "ExportedPair",
    "SourcePair",
    "contract",
    "convert",
    "pair_manifest",
    "tiny_pair",
]

STYLE_INPUT = "style_image"
STYLE_SIZE = 256  # predict's input is fixed: callers resize the style picture to it
VECTOR = "mobilenet_conv/Conv/BiasAdd"  # predict's output and transform's second input
VECTOR_SIZE = 100
CONTENT_INPUT = "content_image"
OUTPUT = "transformer/expand/conv3/conv/Sigmoid"
# The transform rounds its output height and width up to a multiple of this, so callers pad
# the content to one and crop the result.
SIZE_MULTIPLE = 4
# Max abs difference allowed between the source transform and the exported one at the
# source's own size; the rewrite touches only shapes, so anything but float noise is a bug.
TRANSFORM_LIMIT = 1e-6
_SEED = 0
_OTHER_SIZE = (64, 96)  # non-square, a multiple of SIZE_MULTIPLE, much smaller than 384
_DIMS = ("height", "width")
_UNMODIFIED = "give an unmodified copy of the source"


@dataclass(frozen=True)
class SourcePair:
    """The two graphs exactly as a source read them, and the manifest's account of them."""

    predict: bytes
    transform: bytes
    source: dict[str, Any]  # the manifest's "source" block
    licenses: dict[str, Any]  # the manifest's "licenses" block
    checks: tuple[str, ...]  # what the source verified already (hashes)


@dataclass(frozen=True)
class ExportedPair:
    """The graphs the artifact holds, and what the export measured to trust them."""

    predict: bytes
    transform: bytes
    verification: dict[str, Any]


def _tensor(name: str, shape: list[int | str], value_range: list[float] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "dtype": "float32", "layout": "NHWC", "shape": shape}
    if value_range is not None:
        entry["range"] = value_range
    return entry


def contract() -> dict[str, Any]:
    """The manifest's "contract" block: what a caller feeds each graph and what comes back."""
    vector = _tensor(VECTOR, [1, 1, 1, VECTOR_SIZE], None)
    return {
        "predict": {
            "file": PREDICT_FILE,
            "inputs": [_tensor(STYLE_INPUT, [1, STYLE_SIZE, STYLE_SIZE, 3], [0.0, 1.0])],
            "outputs": [vector],
        },
        "transform": {
            "file": TRANSFORM_FILE,
            "inputs": [_tensor(CONTENT_INPUT, [1, *_DIMS, 3], [0.0, 1.0]), vector],
            "outputs": [_tensor(OUTPUT, [1, *_DIMS, 3], [0.0, 1.0])],
        },
        "style_size": STYLE_SIZE,
        "size_multiple": SIZE_MULTIPLE,
        "pixels": "RGB scaled to 0..1, batch of one",
    }


class _FileEntry(TypedDict):
    sha256: str
    bytes: int


def pair_manifest(name: str, predict: bytes, transform: bytes) -> dict[str, Any]:
    """What every feed-forward manifest says about its two files and how to call them."""
    files: dict[str, _FileEntry] = {
        file: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for file, data in ((PREDICT_FILE, predict), (TRANSFORM_FILE, transform))
    }
    return {
        "format": FORMAT_VERSION,
        "name": name,
        "kind": FEED_FORWARD_KIND,
        "files": files,
        "artifact": {
            "sha256": pair_digest({file: entry["sha256"] for file, entry in files.items()}),
            "digest_of": f"sha256sum {' '.join(sorted(files))}",
        },
        "contract": contract(),
    }


def _with_symbolic_size(transform: bytes) -> bytes:
    """The transform graph with its content input's and output's height and width symbolic."""
    model = parse(transform, "the source transform graph", _UNMODIFIED)
    ends = [
        v for v in (*model.graph.input, *model.graph.output) if v.name in (CONTENT_INPUT, OUTPUT)
    ]
    if len(ends) != 2:
        raise ExportError(
            f"the source transform graph has no {CONTENT_INPUT!r} input and {OUTPUT!r} output: "
            "it is not Magenta's arbitrary stylisation transform; give the pinned wheel"
        )
    for value in ends:
        dims = value.type.tensor_type.shape.dim
        for index, name in zip((1, 2), _DIMS, strict=True):
            dims[index].ClearField("dim_value")
            dims[index].dim_param = name
    # Inferred intermediate shapes still say 384: onnxruntime would trust them over the inputs.
    del model.graph.value_info[:]
    return model.SerializeToString()


def _session(data: bytes, what: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's errors share no useful base class
        raise ExportError(
            f"onnxruntime cannot load the {what} ({str(err).splitlines()[0]}): {_UNMODIFIED}"
        ) from err


def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray], what: str) -> np.ndarray:
    try:
        (output,) = session.run(None, feeds)
    except Exception as err:  # as above
        raise ExportError(
            f"onnxruntime cannot run the {what} ({str(err).splitlines()[0]}): {_UNMODIFIED}"
        ) from err
    return np.asarray(output)


def _expect(condition: bool, failure: str) -> None:
    if not condition:
        raise ExportError(
            f"verification failed: {failure}; the export is not trustworthy, so nothing was "
            "installed (report it with the source's sha256)"
        )


def convert(source: SourcePair) -> ExportedPair:
    """Make the transform's size symbolic and verify both graphs against the source's own.

    On a seeded input, with onnxruntime's CPU provider: the predict graph gives the identical
    vector, the transform at the source's size stays within ``TRANSFORM_LIMIT``, and the
    exported transform runs at a non-square size and returns that size.
    """
    predict, transform = source.predict, _with_symbolic_size(source.transform)
    rng = np.random.default_rng(_SEED)
    style = rng.random((1, STYLE_SIZE, STYLE_SIZE, 3), dtype=np.float32)
    source_transform = _session(source.transform, "source transform graph")
    # Compared at the source graph's own fixed size (384x384 in the pinned wheel).
    (fixed,) = (i.shape for i in source_transform.get_inputs() if i.name == CONTENT_INPUT)
    height, width = int(fixed[1]), int(fixed[2])
    content = rng.random((1, height, width, 3), dtype=np.float32)
    other = rng.random((1, *_OTHER_SIZE, 3), dtype=np.float32)

    feed = {STYLE_INPUT: style}
    vector = _run(_session(source.predict, "source predict graph"), feed, "source predict graph")
    ours = _run(_session(predict, "exported predict graph"), feed, "exported predict graph")
    _expect(vector.shape == (1, 1, 1, VECTOR_SIZE), f"the style vector has shape {vector.shape}")
    _expect(np.array_equal(vector, ours), "the exported predict graph gives another vector")

    reference = _run(source_transform, {CONTENT_INPUT: content, VECTOR: vector}, "source transform")
    exported = _session(transform, "exported transform graph")
    result = _run(exported, {CONTENT_INPUT: content, VECTOR: vector}, "exported transform")
    _expect(result.shape == content.shape, f"the transform returns shape {result.shape}")
    difference = float(np.abs(result - reference).max())
    _expect(
        difference <= TRANSFORM_LIMIT,
        f"the exported transform differs from the source by {difference:.2e} "
        f"(limit {TRANSFORM_LIMIT:.0e})",
    )
    small = _run(exported, {CONTENT_INPUT: other, VECTOR: vector}, "exported transform")
    _expect(
        small.shape == other.shape,
        f"at {_OTHER_SIZE[0]}x{_OTHER_SIZE[1]} the transform returns shape {small.shape}",
    )
    low, high = float(min(result.min(), small.min())), float(max(result.max(), small.max()))
    _expect(0.0 <= low and high <= 1.0, f"the output leaves 0..1 ({low}..{high})")
    verification = {
        "checks": [
            *source.checks,
            "predict: exported vector identical to the source's (onnxruntime CPU)",
            f"transform at {height}x{width}: max abs diff to the source <= {TRANSFORM_LIMIT:.0e}",
            f"transform at {_OTHER_SIZE[0]}x{_OTHER_SIZE[1]}: runs, same shape, output in 0..1",
            "loader accepts the staged artifact",
        ],
        "provider": "CPUExecutionProvider",
        "onnxruntime": ort.__version__,
        "seed": _SEED,
        "predict_max_abs_diff": float(np.abs(ours - vector).max()),
        "transform_size": [height, width],
        "transform_max_abs_diff": difference,
        "transform_limit": TRANSFORM_LIMIT,
        "other_size": list(_OTHER_SIZE),
        "other_output_shape": list(small.shape),
        "output_range": [low, high],
    }
    return ExportedPair(predict=predict, transform=transform, verification=verification)


# --- the tiny stand-in -------------------------------------------------------------------------


def _weights(name: str, shape: tuple[int, ...], phase: float) -> onnx.TensorProto:
    # A formula rather than a random generator: the same numbers on every platform and version.
    values = 0.5 * np.sin(np.arange(int(np.prod(shape)), dtype=np.float64) * 0.37 + phase)
    return numpy_helper.from_array(values.reshape(shape).astype(np.float32), name)


def _model(graph: onnx.GraphProto) -> bytes:
    # IR 8 / opset 15, as tf2onnx wrote the real pair: onnxruntime refuses IRs newer than it knows.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _tiny_predict() -> bytes:
    # Mean colour of the style picture, projected to the vector.
    nodes = [
        helper.make_node("ReduceMean", [STYLE_INPUT], ["mean"], axes=[1, 2], keepdims=1),
        helper.make_node("MatMul", ["mean", "project"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], [VECTOR]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arbitrary_predict",
        [
            helper.make_tensor_value_info(
                STYLE_INPUT, TensorProto.FLOAT, [1, STYLE_SIZE, STYLE_SIZE, 3]
            )
        ],
        [helper.make_tensor_value_info(VECTOR, TensorProto.FLOAT, [1, 1, 1, VECTOR_SIZE])],
        [_weights("project", (3, VECTOR_SIZE), 0.0), _weights("bias", (VECTOR_SIZE,), 1.0)],
    )
    return _model(graph)


def _tiny_transform() -> bytes:
    # The real graph's size rule (height and width rounded up to SIZE_MULTIPLE) by edge padding,
    # then a 1x1 convolution of the content plus a projection of the vector, then a sigmoid.
    consts = {
        "hw_start": [1],
        "hw_end": [3],
        "multiple": [SIZE_MULTIPLE, SIZE_MULTIPLE],
        "pad_before": [0, 0, 0, 0, 0],
        "pad_after": [0],
    }
    nodes = [
        helper.make_node(
            "Constant", [], [n], value=helper.make_tensor(n, TensorProto.INT64, [len(v)], v)
        )
        for n, v in consts.items()
    ]
    nodes += [
        helper.make_node("Shape", [CONTENT_INPUT], ["shape"]),
        helper.make_node("Slice", ["shape", "hw_start", "hw_end"], ["hw"]),
        helper.make_node("Neg", ["hw"], ["neg_hw"]),
        # (-n) mod m, with Mod's default (Python-style) sign, is how far n is below a multiple of m.
        helper.make_node("Mod", ["neg_hw", "multiple"], ["pad_hw"]),
        helper.make_node("Concat", ["pad_before", "pad_hw", "pad_after"], ["pads"], axis=0),
        helper.make_node("Pad", [CONTENT_INPUT, "pads"], ["padded"], mode="edge"),
        helper.make_node("MatMul", ["padded", "mix"], ["mixed"]),
        helper.make_node("MatMul", [VECTOR, "style"], ["styled"]),
        helper.make_node("Add", ["mixed", "styled"], ["summed"]),
        helper.make_node("Add", ["summed", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arbitrary_transform",
        [
            helper.make_tensor_value_info(CONTENT_INPUT, TensorProto.FLOAT, [1, *_DIMS, 3]),
            helper.make_tensor_value_info(VECTOR, TensorProto.FLOAT, [1, 1, 1, VECTOR_SIZE]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, *_DIMS, 3])],
        [
            _weights("mix", (3, 3), 2.0),
            _weights("style", (VECTOR_SIZE, 3), 3.0),
            _weights("bias", (3,), 4.0),
        ],
    )
    return _model(graph)


def tiny_pair() -> FeedForwardArtifact:
    """The ``tiny-arbitrary`` pair, built in memory: untrained, deterministic, the real contract."""
    predict, transform = _tiny_predict(), _tiny_transform()
    manifest = pair_manifest(TINY_FEED_FORWARD, predict, transform)
    return FeedForwardArtifact(
        name=TINY_FEED_FORWARD,
        sha256=manifest["artifact"]["sha256"],
        predict=predict,
        transform=transform,
        manifest=manifest,
    )
